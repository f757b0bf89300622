"""Send telemetry shaped like otel-mta's into a Collector with the OTel Python SDK exporters.

Spans follow the sidecar's shape: one root `message` span per queue entry and a
CLIENT span per delivery attempt carrying `mta.delivery.outcome`
(delivered | deferred | rejected; status ERROR when rejected).
"""
from __future__ import annotations

import hashlib
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

RESOURCE = Resource.create({"service.name": "zonemta", "k8s.pod.name": "zonemta-0",
                            "k8s.namespace.name": "mail"})
SCOPE = InstrumentationScope("otel-mta", "test")


def trace_id(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big")


def span_id(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def _ctx(tid: int, sid: int) -> SpanContext:
    return SpanContext(tid, sid, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def root_span(tid: int, queue_id: str, state: str = "delivered", start_ns: int | None = None) -> ReadableSpan:
    start = start_ns or time.time_ns() - 5_000_000_000
    return ReadableSpan(
        name="message", context=_ctx(tid, span_id("root:" + queue_id)), parent=None,
        resource=RESOURCE, kind=SpanKind.INTERNAL, instrumentation_scope=SCOPE,
        attributes={"mta.queue_id": queue_id, "mta.message.state": state},
        start_time=start, end_time=start + 4_000_000_000)


def attempt_span(tid: int, queue_id: str, outcome: str, seq: str = "001", defcount: int = 0,
                 domain: str = "example.com", ip: str = "192.0.2.10") -> ReadableSpan:
    start = time.time_ns() - 2_000_000_000
    attrs = {"mta.queue_id": queue_id, "mta.delivery.seq": seq, "mta.delivery.outcome": outcome,
             "mta.recipient.domain": domain, "mta.sending_ip": ip, "server.address": "mx." + domain}
    status = Status(StatusCode.UNSET)
    if outcome == "deferred":
        attrs["mta.defer.count"] = defcount
    if outcome == "rejected":
        attrs["error.type"] = "recipient"
        status = Status(StatusCode.ERROR, "550 5.1.1 user unknown")
    action = {"delivered": "ACCEPTED", "deferred": "DEFERRED", "rejected": "REJECTED"}[outcome]
    return ReadableSpan(
        name="delivery " + outcome, context=_ctx(tid, span_id(f"attempt:{queue_id}:{seq}:{action}:{defcount}")),
        parent=_ctx(tid, span_id("root:" + queue_id)), resource=RESOURCE, kind=SpanKind.CLIENT,
        instrumentation_scope=SCOPE, attributes=attrs, status=status,
        start_time=start, end_time=start + 1_500_000_000)


def span_exporter(col, protocol: str = "grpc"):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter(endpoint=col.grpc_endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter(endpoint=col.http_endpoint + "/v1/traces")


def send_spans(col, spans, protocol: str = "grpc") -> None:
    exp = span_exporter(col, protocol)
    try:
        result = exp.export(list(spans))
        assert result.name == "SUCCESS", result
    finally:
        exp.shutdown()


def spans_in(requests: list[dict]) -> list[dict]:
    """Flatten file-exporter trace requests to spans, each with its resource attributes."""
    out = []
    for req in requests:
        for rs in req.get("resourceSpans", []):
            res = {a["key"]: a["value"] for a in rs.get("resource", {}).get("attributes", [])}
            for ss in rs.get("scopeSpans", []):
                for sp in ss.get("spans", []):
                    out.append({**sp, "_resource": res})
    return out


def attr(obj: dict, key: str):
    for a in obj.get("attributes", []):
        if a["key"] == key:
            v = a["value"]
            return next(iter(v.values())) if v else None
    return None
