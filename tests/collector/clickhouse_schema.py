"""The ClickHouse tables the clickhouse exporter creates, and rows shaped like its inserts.

The DDL is rendered from the exporter's own SQL templates in the Go module
cache, for the version manifest.yaml pins (nothing of it is copied into this
repo). The renderer mirrors the exporter's Go code for these settings:
database `otel`, default engine MergeTree(), no cluster, TTL 720h.
`rows_from_otlp` maps OTLP JSON (file-exporter format) to the columns the
exporter fills (exporter_logs.go / exporter_traces.go), so the shipped queries
run against the same shapes the Collector writes.
"""
from __future__ import annotations

import base64
import json
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/clickhouseexporter"
DATABASE = "otel"
ENGINE = "MergeTree()"
TTL_DAYS = 30  # gateway.yaml: ttl 720h -> the exporter writes toIntervalDay(30)


def exporter_version() -> str:
    m = re.search(re.escape(MODULE) + r" (v[0-9.]+)", (ROOT / "collector-config/manifest.yaml").read_text())
    assert m, "clickhouse exporter not found in manifest.yaml"
    return m.group(1)


def sqltemplates_dir() -> Path:
    """The exporter module's sqltemplates folder (downloads the module if needed)."""
    res = subprocess.run(["go", "mod", "download", "-json", f"{MODULE}@{exporter_version()}"],
                         capture_output=True, text=True, check=True)
    return Path(json.loads(res.stdout)["Dir"]) / "internal" / "sqltemplates"


def _sprintf(template: str, *args: str) -> str:
    """Go's fmt.Sprintf for the two verbs the templates use: %s and %q."""
    verbs = re.findall(r"%[sq]", template)
    assert len(verbs) == len(args), (len(verbs), len(args))
    it = iter(args)
    return re.sub(r"%[sq]", lambda m: json.dumps(next(it)) if m.group() == "%q" else next(it), template)


def _text_template(template: str, data: dict, flags: dict) -> str:
    """The subset of Go text/template the logs template uses."""
    def if_block(m):
        return m.group(2) if flags[m.group(1)] else m.group(3)
    out = re.sub(r"\s*\{\{- if \.(\w+)\}\}(.*?)\s*\{\{- else\}\}(.*?)\s*\{\{- end\}\}", if_block, template, flags=re.S)
    out = re.sub(r"\{\{ident \.(\w+)\}\}", lambda m: "`" + data[m.group(1)].replace("`", "\\`") + "`", out)
    out = re.sub(r"\{\{\.(\w+)\}\}", lambda m: data[m.group(1)], out)
    assert "{{" not in out, "template construct the renderer does not know: " + out[out.index("{{"):][:80]
    return out


def create_statements(full_text_search: bool) -> list[str]:
    """What the exporter runs at start (create_schema: true), in order.

    full_text_search mirrors the exporter's check: ClickHouse >= 26.2 gets text() indexes.
    """
    d = sqltemplates_dir()
    read = lambda name: (d / name).read_text()  # noqa: E731
    ttl = lambda col: f"TTL {col} + toIntervalDay({TTL_DAYS})"  # noqa: E731
    stmts = [f'CREATE DATABASE IF NOT EXISTS "{DATABASE}" ']
    stmts.append(_text_template(read("logs_table.sql"),
                                {"Database": DATABASE, "TableName": "otel_logs", "ClusterString": "",
                                 "Engine": ENGINE, "TTL": ttl("toDateTime(Timestamp)")},
                                {"HasFullTextSearch": full_text_search}))
    stmts.append(_sprintf(read("traces_table.sql"), DATABASE, "otel_traces", "", ENGINE, ttl("toDateTime(Timestamp)")))
    stmts.append(_sprintf(read("traces_id_ts_lookup_table.sql"), DATABASE, "otel_traces", "", ENGINE,
                          ttl("toDateTime(Start)")))
    stmts.append(_sprintf(read("traces_id_ts_lookup_mv.sql"), DATABASE, "otel_traces", "",
                          DATABASE, "otel_traces", DATABASE, "otel_traces"))
    for kind in ["gauge", "sum", "summary", "histogram", "exp_histogram"]:
        table = "otel_metrics_" + ("exponential_histogram" if kind == "exp_histogram" else kind)
        stmts.append(_sprintf(read(f"metrics_{kind}_table.sql"), DATABASE, table, "", ENGINE,
                              ttl("toDateTime(TimeUnix)")))
    return stmts


# --- rows -----------------------------------------------------------------

def any_value_as_string(v: dict) -> str:
    """pcommon.Value.AsString() for an OTLP JSON AnyValue."""
    if not v:
        return ""
    (kind, val), = v.items()
    if kind == "stringValue":
        return val
    if kind == "intValue":
        return str(int(val))
    if kind == "boolValue":
        return "true" if val else "false"
    if kind == "doubleValue":
        return repr(float(val)).removesuffix(".0") if float(val).is_integer() else repr(float(val))
    if kind == "bytesValue":
        return val  # already base64 in OTLP JSON, as AsString() renders it
    return json.dumps(_raw(v), separators=(",", ":"), ensure_ascii=False)


def _raw(v: dict):
    (kind, val), = v.items()
    if kind == "arrayValue":
        return [_raw(x) for x in val.get("values", [])]
    if kind == "kvlistValue":
        return {kv["key"]: _raw(kv["value"]) for kv in val.get("values", [])}
    if kind == "intValue":
        return int(val)
    if kind == "bytesValue":
        return base64.b64decode(val).hex()
    return val


def attrs(obj: dict) -> dict[str, str]:
    return {a["key"]: any_value_as_string(a.get("value", {})) for a in obj.get("attributes", [])}


def ts(ns) -> str:
    ns = int(ns)
    dt = datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%d %H:%M:%S") + f".{ns % 1_000_000_000:09d}"


def log_rows(requests: list[dict]) -> list[dict]:
    rows = []
    for req in requests:
        for rl in req.get("resourceLogs", []):
            res = attrs(rl.get("resource", {}))
            for sl in rl.get("scopeLogs", []):
                scope = sl.get("scope", {})
                for r in sl.get("logRecords", []):
                    rows.append({
                        "Timestamp": ts(r.get("timeUnixNano") or r.get("observedTimeUnixNano", 0)),
                        "TraceId": r.get("traceId", ""), "SpanId": r.get("spanId", ""),
                        "TraceFlags": r.get("flags", 0) & 0xFF,
                        "SeverityText": r.get("severityText", ""),
                        "SeverityNumber": _severity_number(r.get("severityNumber", 0)),
                        "ServiceName": res.get("service.name", ""),
                        "Body": any_value_as_string(r.get("body", {})),
                        "ResourceSchemaUrl": rl.get("schemaUrl", ""), "ResourceAttributes": res,
                        "ScopeSchemaUrl": sl.get("schemaUrl", ""), "ScopeName": scope.get("name", ""),
                        "ScopeVersion": scope.get("version", ""), "ScopeAttributes": attrs(scope),
                        "LogAttributes": attrs(r), "EventName": r.get("eventName", ""),
                    })
    return rows


_SEVERITY = {f"SEVERITY_NUMBER_{n}": i for i, n in enumerate(
    ["UNSPECIFIED"] + [f"{lvl}{k}" if k > 1 else lvl for lvl in ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
                       for k in range(1, 5)])}


def _severity_number(v) -> int:
    return v if isinstance(v, int) else _SEVERITY.get(v, 0)


_KIND = ["Unspecified", "Internal", "Server", "Client", "Producer", "Consumer"]
_STATUS = ["Unset", "Ok", "Error"]


def span_rows(requests: list[dict]) -> list[dict]:
    rows = []
    for req in requests:
        for rs in req.get("resourceSpans", []):
            res = attrs(rs.get("resource", {}))
            for ss in rs.get("scopeSpans", []):
                scope = ss.get("scope", {})
                for s in ss.get("spans", []):
                    status = s.get("status", {})
                    events = s.get("events", [])
                    rows.append({
                        "Timestamp": ts(s["startTimeUnixNano"]), "TraceId": s["traceId"], "SpanId": s["spanId"],
                        "ParentSpanId": s.get("parentSpanId", ""), "TraceState": s.get("traceState", ""),
                        "SpanName": s["name"], "SpanKind": _KIND[s.get("kind", 0)],
                        "ServiceName": res.get("service.name", ""), "ResourceAttributes": res,
                        "ScopeName": scope.get("name", ""), "ScopeVersion": scope.get("version", ""),
                        "SpanAttributes": attrs(s),
                        "Duration": int(s["endTimeUnixNano"]) - int(s["startTimeUnixNano"]),
                        "StatusCode": _STATUS[status.get("code", 0)], "StatusMessage": status.get("message", ""),
                        "Events.Timestamp": [ts(e["timeUnixNano"]) for e in events],
                        "Events.Name": [e.get("name", "") for e in events],
                        "Events.Attributes": [attrs(e) for e in events],
                        "Links.TraceId": [], "Links.SpanId": [], "Links.TraceState": [], "Links.Attributes": [],
                    })
    return rows


_METRIC_KINDS = {"gauge": "gauge", "sum": "sum", "histogram": "histogram"}


def metric_rows(requests: list[dict]) -> dict[str, list[dict]]:
    """Rows of otel_metrics_gauge / _sum / _histogram as the exporter fills them
    (internal/metrics/*_metrics.go): one per data point, the resource's and the
    point's attributes as strings, times in DateTime (seconds)."""
    out: dict[str, list[dict]] = {kind: [] for kind in _METRIC_KINDS.values()}
    for req in requests:
        for rm in req.get("resourceMetrics", []):
            res = attrs(rm.get("resource", {}))
            for sm in rm.get("scopeMetrics", []):
                scope = sm.get("scope", {})
                for m in sm.get("metrics", []):
                    kind = next((k for k in _METRIC_KINDS if k in m), None)
                    if kind is None:
                        continue       # exponential histograms and summaries: otel-mta sends none
                    data = m[kind]
                    for dp in data.get("dataPoints", []):
                        row = {"ResourceAttributes": res, "ResourceSchemaUrl": rm.get("schemaUrl", ""),
                               "ScopeName": scope.get("name", ""), "ScopeVersion": scope.get("version", ""),
                               "ScopeAttributes": attrs(scope), "ScopeDroppedAttrCount": 0,
                               "ScopeSchemaUrl": sm.get("schemaUrl", ""), "ServiceName": res.get("service.name", ""),
                               "MetricName": m["name"], "MetricDescription": m.get("description", ""),
                               "MetricUnit": m.get("unit", ""), "Attributes": attrs(dp),
                               "StartTimeUnix": int(dp.get("startTimeUnixNano", 0)) // 1_000_000_000,
                               "TimeUnix": int(dp.get("timeUnixNano", 0)) // 1_000_000_000,
                               "Flags": dp.get("flags", 0)}
                        temporality = data.get("aggregationTemporality", 0)
                        if isinstance(temporality, str):
                            temporality = {"AGGREGATION_TEMPORALITY_DELTA": 1,
                                           "AGGREGATION_TEMPORALITY_CUMULATIVE": 2}.get(temporality, 0)
                        if kind == "histogram":
                            row.update({"Count": int(dp.get("count", 0)), "Sum": float(dp.get("sum", 0)),
                                        "BucketCounts": [int(c) for c in dp.get("bucketCounts", [])],
                                        "ExplicitBounds": [float(b) for b in dp.get("explicitBounds", [])],
                                        "Min": float(dp.get("min", 0)), "Max": float(dp.get("max", 0)),
                                        "AggregationTemporality": temporality})
                        else:
                            row["Value"] = float(dp["asDouble"]) if "asDouble" in dp else float(int(dp.get("asInt", 0)))
                            if kind == "sum":
                                row.update({"AggregationTemporality": temporality,
                                            "IsMonotonic": bool(data.get("isMonotonic", False))})
                        out[_METRIC_KINDS[kind]].append(row)
    return out
