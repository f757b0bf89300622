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


# Every way a record can be lost or degraded, and the self-metric that counts it
LOSSES = (
    ("otelmta_receiver_refused_records", "a receiver refused a record (malformed, oversized, unauthorised)"),
    ("otelmta_receiver_dropped_records", "a record was lost before decoding (kernel or reading-thread buffer "
                                         "full, GELF chunk set incomplete)"),
    ("otelmta_receiver_pushed_back_requests", "an HTTP request was answered 503 (GELF HTTP clients rarely retry)"),
    ("otelmta_exporter_send_failed_log_records", "the exporter gave up on log records (likewise `_spans`, "
                                                 "`_metric_points`)"),
    ("otelmta_exporter_spool_corrupt", "a spool segment's tail could not be read back after a crash"),
    ("otelmta_correlation_evicted", "a bounded table forgot an entry (a later entry lands in another trace, "
                                    "a root span ends early)"),
    ("otelmta_metric_points_overflowed", "a measurement lost its attributes in the overflow series"),
    ("otelmta_gelf_hosts_over_limit", "a GELF sender's host went on the record instead of the resource"),
    ("otelmta_attribute_values_truncated", "an attribute value was cut to a length limit"),
)
# not losses: counted apart so that the above can alert on any increase
NOT_LOSSES = (("otelmta_receiver_deduplicated_records", "a copy of a record that arrived already was ignored"),)


def render_metrics_md() -> str:
    _check_losses()
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
    out += ["## Where losses show", "",
            "Each of these counts only losses (or a lost detail), so any increase is worth a look;",
            "duplicates ignored on purpose are counted apart.", ""]
    out += [f"- `{name}`: {what}" for name, what in LOSSES]
    out += [f"- not a loss: `{name}`: {what}" for name, what in NOT_LOSSES] + [""]
    out += ["## Attributes", "", "| attribute | type | on | description |", "|---|---|---|---|"]
    for a in sorted(c.attributes.values(), key=lambda a: a.name):
        capped = " Free text: at most `limits.free_text_length` characters." if a.free_text else ""
        out.append(f"| `{a.name}` | {a.type} | {', '.join(a.signals)} | {a.description}{capped} |")
    prefixes = ", ".join(f"`{p}*`" for p in c.passthrough_prefixes)
    out += ["", f"Fields passed through by name ({prefixes}) are free text too. Attribute values longer",
            "than the limits (docs/configuration.md, `limits`) are cut and counted in",
            "`otelmta_attribute_values_truncated`."]
    return "\n".join(out) + "\n"


def _check_losses() -> None:
    names = catalog.load().metrics
    for name, _ in LOSSES + NOT_LOSSES:
        if name not in names:
            raise KeyError(f"docs.LOSSES names {name}, which is not in the catalog")


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    (root / "docs" / "metrics.md").write_text(render_metrics_md())
    print("wrote docs/metrics.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
