"""Generates docs/metrics.md from the catalog (`make docs`; a test keeps it in sync)."""
from __future__ import annotations

import sys
from pathlib import Path

from otel_mta import catalog

AREAS = {
    "mail": "ZoneMTA messages and deliveries (remote log, plugin events)",
    "self": "The sidecar itself",
    "zonemta_api": "ZoneMTA's HTTP API: queue depth and ZoneMTA's own counters (docs/pollers.md)",
    "mongodb": "MongoDB and ZoneMTA's queue in it (names of the Collector's mongodbreceiver)",
    "redis": "Redis (names of the Collector's redisreceiver)",
    "host": "The host and the mail stack's processes (names of the Collector's hostmetricsreceiver)",
    "poller": "Pollers' own health",
}


def render_metrics_md() -> str:
    c = catalog.load()
    out = ["# Metrics and attributes", "",
           "Generated from `otel_mta/catalog/*.yaml` by `make docs` — edit the catalog, not this file.",
           "Temporality is cumulative from the sidecar's start. Units are UCUM.", ""]
    areas = sorted({m.area for m in c.metrics.values()}, key=lambda a: (a not in AREAS, a))
    for area in areas:
        out += [f"## {AREAS.get(area, area)}", "",
                "| metric | type | unit | attributes | description |", "|---|---|---|---|---|"]
        for m in sorted((m for m in c.metrics.values() if m.area == area), key=lambda m: m.name):
            attrs = ", ".join(f"`{a}`" for a in m.attributes) or "—"
            out.append(f"| `{m.name}` | {m.type} | `{m.unit}` | {attrs} | {m.description} |")
        out.append("")
    out += ["## Attributes", "", "| attribute | type | on | description |", "|---|---|---|---|"]
    for a in sorted(c.attributes.values(), key=lambda a: a.name):
        capped = " Free text: at most `limits.free_text_length` characters." if a.free_text else ""
        out.append(f"| `{a.name}` | {a.type} | {', '.join(a.signals)} | {a.description}{capped} |")
    prefixes = ", ".join(f"`{p}*`" for p in c.passthrough_prefixes)
    out += ["", f"Fields passed through by name ({prefixes}) are free text too. Attribute values longer",
            "than the limits (docs/configuration.md, `limits`) are cut and counted in",
            "`otelmta_attribute_values_truncated`."]
    return "\n".join(out) + "\n"


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    (root / "docs" / "metrics.md").write_text(render_metrics_md())
    print("wrote docs/metrics.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
