"""OTLP from the OTel Python SDK into the `local` config ends up in its files."""
from __future__ import annotations

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from telemetry import RESOURCE, attempt_span, attr, root_span, send_spans, spans_in, trace_id


def _exporters(col, protocol):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        return (OTLPLogExporter(endpoint=col.grpc_endpoint, insecure=True),
                OTLPMetricExporter(endpoint=col.grpc_endpoint, insecure=True))
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    return (OTLPLogExporter(endpoint=col.http_endpoint + "/v1/logs"),
            OTLPMetricExporter(endpoint=col.http_endpoint + "/v1/metrics"))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_local_config_writes_all_signals_to_files(otelcol, protocol):
    col = otelcol(["local.yaml"])
    tid = trace_id("mid:abc@example.com")
    send_spans(col, [root_span(tid, "q1"), attempt_span(tid, "q1", "delivered")], protocol)

    log_exp, metric_exp = _exporters(col, protocol)
    lp = LoggerProvider(resource=RESOURCE)
    lp.add_log_record_processor(SimpleLogRecordProcessor(log_exp))
    lp.get_logger("otel-mta").emit(body="MTA delivered", attributes={"mta.action": "ACCEPTED", "mta.queue_id": "q1"})
    lp.shutdown()
    reader = PeriodicExportingMetricReader(metric_exp, export_interval_millis=60_000)
    mp = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    mp.get_meter("otel-mta").create_counter("mta.delivery.attempts", unit="{attempt}").add(
        3, {"mta.delivery.outcome": "delivered", "mta.recipient.domain": "example.com"})
    mp.shutdown()  # collects and exports once

    spans = col.wait_for(lambda c: len(spans_in(c.records("traces"))) >= 2 and spans_in(c.records("traces")),
                         what="2 spans in traces.jsonl")
    assert {s["name"] for s in spans} == {"message", "delivery delivered"}
    assert all(s["traceId"] == f"{tid:032x}" for s in spans)
    attempt = next(s for s in spans if s["name"] == "delivery delivered")
    assert attr(attempt, "mta.delivery.outcome") == "delivered"
    assert attempt["_resource"]["service.name"] == {"stringValue": "zonemta"}

    logs = col.wait_for(lambda c: c.records("logs"), what="logs.jsonl")
    rec = logs[0]["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert rec["body"] == {"stringValue": "MTA delivered"}
    assert attr(rec, "mta.action") == "ACCEPTED"

    metrics = col.wait_for(lambda c: c.records("metrics"), what="metrics.jsonl")
    m = metrics[0]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
    assert m["name"] == "mta.delivery.attempts" and m["unit"] == "{attempt}"
    point = m["sum"]["dataPoints"][0]
    assert point["asInt"] == "3"
    assert attr(point, "mta.recipient.domain") == "example.com"
    assert col.stop() == 0
