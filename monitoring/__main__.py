"""Regenerate everything under monitoring/generated/: `python -m monitoring`
(make monitoring). The committed output is what CI compares against."""
from __future__ import annotations

import sys


def main() -> int:
    try:
        from monitoring import rules
    except ImportError:      # the rules generator lives on another branch until both are merged
        rules = None
    if rules is not None:
        rules.generate()
    from monitoring import dashboards
    for path in dashboards.generate():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
