"""The sidecar -> the real Collector we build (OTLP receiver) -> its file
exporter: what lands in the Collector's files is exactly what the sidecar sent
(counts, attributes, trace and span ids), over gRPC and over HTTP."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from otel_mta.config import load as load_settings
from otel_mta.sources.remote_log import RemoteLogSource
from tests.otlp_receiver import attrs as pb_attrs

ENTRIES = [json.loads(l) for l in (Path(__file__).parent.parent / "fixtures" / "remote_log" / "entries.jsonl")
           .read_text().splitlines()]


def _value(v: dict):
    (kind, val), = v.items() if v else ((None, None),)
    if kind == "intValue":
        return int(val)
    if kind == "arrayValue":
        return [_value(x) for x in val.get("values", [])]
    if kind == "kvlistValue":
        return {kv["key"]: _value(kv["value"]) for kv in val.get("values", [])}
    return val


def _attrs(item: dict) -> dict:
    return {kv["key"]: _value(kv["value"]) for kv in item.get("attributes", [])}


def _collector_logs(col):
    return [(r.get("traceId", ""), r["body"]["stringValue"], json.dumps(_attrs(r), sort_keys=True))
            for line in col.records("logs") for rl in line["resourceLogs"]
            if _attrs(rl["resource"])["service.name"] == "zonemta"
            for sl in rl["scopeLogs"] for r in sl["logRecords"]]


def _timeless(attrs: dict) -> str:
    """The attributes but message.final's time in queue: the time between two arrivals."""
    attrs.pop("mta.message.time_in_queue_ms", None)
    return json.dumps(attrs, sort_keys=True)


def _collector_spans(col):
    return [(s["traceId"], s["spanId"], s.get("parentSpanId", ""), s["name"], _timeless(_attrs(s)))
            for line in col.records("traces") for rs in line["resourceSpans"]
            for ss in rs["scopeSpans"] for s in ss["spans"]]


def _expected(capture, js_encode):
    """The same datagrams through an in-process pipeline: what the sidecar sends."""
    make, rx = capture
    p = make()
    src = RemoteLogSource(p, load_settings(environ={}).sources.remote_log)
    for d in js_encode(ENTRIES):
        src.handle_datagram(d)
    p.mail.tick(flush_all=True)
    p.flush()
    logs = [(r.trace_id.hex(), r.body.string_value, json.dumps(pb_attrs(r.attributes), sort_keys=True))
            for _, r in rx.log_records()]
    spans = [(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name,
              _timeless(pb_attrs(s.attributes))) for _, s in rx.spans()]
    return logs, spans


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_sidecar_to_the_built_collector(otelcol, sidecar, js_encode, capture, protocol):
    col = otelcol(["local.yaml"])
    endpoint = col.grpc_endpoint if protocol == "grpc" else col.http_endpoint
    sc = sidecar({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                  "OTEL_METRIC_EXPORT_INTERVAL": "60000"})
    sc.send(js_encode(ENTRIES))
    time.sleep(0.5)
    assert sc.terminate() == 0  # flushes open root spans and the final metrics
    want_logs, want_spans = _expected(capture, js_encode)
    got_logs = col.wait_for(lambda c: len(_collector_logs(c)) >= len(ENTRIES) and _collector_logs(c),
                            what=f"{len(ENTRIES)} log records in the Collector's logs.jsonl")
    got_spans = col.wait_for(lambda c: len(_collector_spans(c)) >= len(want_spans) and _collector_spans(c),
                             what="spans in traces.jsonl")
    assert sorted(got_logs) == sorted(want_logs)
    assert sorted(got_spans) == sorted(want_spans)
    metrics = col.wait_for(lambda c: c.records("metrics"), what="metrics.jsonl")
    points = {}
    for line in metrics:
        for rm in line["resourceMetrics"]:
            for sm in rm["scopeMetrics"]:
                for m in sm["metrics"]:
                    for p in m.get("sum", {}).get("dataPoints", []):
                        points.setdefault(m["name"], []).append((_attrs(p), int(p.get("asInt", 0))))
    attempts = {(a["mta.delivery.outcome"], a.get("mta.bounce.category")): v for a, v in points["mta.delivery.attempts"]}
    assert attempts == {("delivered", None): 1, ("deferred", "network"): 1, ("deferred", "greylist"): 1,
                        ("rejected", "recipient"): 1}
    # the sidecar's own telemetry names the exporter it used
    exporters = {a["exporter"] for a, _ in points["otelmta_exporter_sent_log_records"]}
    assert exporters == {{"grpc": "otlp_grpc", "http/protobuf": "otlp_http"}[protocol]}
