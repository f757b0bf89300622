"""LogQL for the Prometheus profile's Loki panels. Loki (3.x, native OTLP)
keeps service.name as the stream label `service_name` and log attributes as
structured metadata with dots turned into underscores (mta.smtp.response ->
mta_smtp_response). Loki cannot run here (AGPL): tests/monitoring checks these
queries' shape and label names, not their results (docs/dashboards.md)."""
from __future__ import annotations

from otel_mta import smtp_reply

ZONEMTA_STREAM = '{service_name="zonemta"}'


def _go_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def reply_kind(label: str = "mta_smtp_response") -> str:
    """A text/template for `label_format` applying otel_mta.smtp_reply's rules
    (Go's regexp is RE2, as ClickHouse's; its replacement says ${1} for \\1)."""
    expr = f".{label}"
    for pattern, replacement in smtp_reply.RULES:
        expr = f"(regexReplaceAll {_go_string(pattern)} {expr} {_go_string(replacement.replace(chr(92) + '1', '${1}'))})"
    return "{{ trunc " + str(smtp_reply.MAX_LEN) + " (trim " + expr + ") }}"
