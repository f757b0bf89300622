"""Generate everything in monitoring/generated/ from monitoring/config.yaml.

    python -m monitoring            # write the files (make monitoring)
    python -m monitoring --check    # exit 1 and name the files that are stale
"""
from __future__ import annotations

import argparse
import sys

from monitoring import dashboards, rules


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m monitoring", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="write nothing; fail when an output is stale")
    args = ap.parse_args(argv)
    stale = list(rules.generate(check=args.check)) + list(dashboards.generate(check=args.check))
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'} {path}", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
