"""Baseline for bench/remote_log.py: a plain OpenTelemetry Python SDK program
that receives the same datagrams and emits the same records (a log record per
entry, a span per delivery attempt, the same metrics) through the SDK's batch
processors and OTLP/gRPC exporters.

    python bench/sdk_baseline.py --port 31239 --endpoint http://127.0.0.1:4317
"""
from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_mta.sources.msgpack_js import DecodeError, decode  # the same decoder: the SDK is what is compared

OUTCOME = {"ACCEPTED": "delivered", "DEFERRED": "deferred", "REJECTED": "rejected"}


def domain(addr):
    return addr.rsplit("@", 1)[-1].lower() if isinstance(addr, str) and "@" in addr else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--endpoint", required=True)
    args = ap.parse_args()
    resource = Resource.create({"service.name": "zonemta"})
    # queues sized so that the SDK does not silently drop (its default 2048 loses most of a burst)
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=args.endpoint, insecure=True),
                                                        max_queue_size=200_000, schedule_delay_millis=500))
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=args.endpoint, insecure=True),
                                             max_queue_size=200_000, schedule_delay_millis=500))
    mp = MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=args.endpoint, insecure=True), export_interval_millis=5000)])
    logger = lp.get_logger("baseline")
    tracer = tp.get_tracer("baseline")
    meter = mp.get_meter("baseline")
    attempts = meter.create_counter("mta.delivery.attempts")
    duration = meter.create_histogram("mta.delivery.duration", unit="s")
    queued = meter.create_counter("mta.message.queued")

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", args.port))
    sock.settimeout(0.2)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    print("ready", flush=True)
    while not stop.is_set():
        try:
            data = sock.recv(65535)
        except socket.timeout:
            continue
        try:
            e = decode(data)
        except DecodeError:
            continue
        action = e.get("action")
        attrs = {"mta.action": action, "mta.queue_id": e.get("id"), "mta.delivery.seq": e.get("seq")}
        outcome = OUTCOME.get(action)
        if outcome:
            attrs.update({"mta.zone": e.get("zone"), "mta.delivery.outcome": outcome,
                          "mta.recipient.domain": domain(e.get("to")), "mta.sender.domain": domain(e.get("from")),
                          "mta.mx.host": e.get("mx"), "server.address": e.get("mx"),
                          "network.peer.address": e.get("host"), "mta.sending_ip": e.get("ip"),
                          "mta.smtp.response": e.get("response"), "mta.message.size": e.get("size"),
                          "mta.protocol": e.get("protocol"), "mta.tls.version": e.get("tlsVersion"),
                          "mta.tls.cipher": e.get("tlsCipher"), "mta.bounce.category": e.get("category")})
            start_ns = int(e["start"] * 1e6) if e.get("start") else None
            span = tracer.start_span("delivery", kind=SpanKind.CLIENT, start_time=start_ns,
                                     attributes={k: v for k, v in attrs.items() if v is not None})
            if action == "REJECTED":
                span.set_status(Status(StatusCode.ERROR, e.get("response")))
            span.end(end_time=start_ns + int((e.get("timer") or 0) * 1e6) if start_ns else None)
            attempts.add(1, {"mta.zone": e.get("zone"), "mta.delivery.outcome": outcome,
                             "mta.sending_ip": e.get("ip"), "mta.recipient.domain": domain(e.get("to"))})
            if e.get("timer") is not None:
                duration.record(e["timer"] / 1000, {"mta.zone": e.get("zone"), "mta.delivery.outcome": outcome})
        elif action == "QUEUED":
            attrs.update({"mta.message_id": e.get("message-id"), "mta.interface": e.get("interface"),
                          "mta.sender.domain": domain(e.get("from")), "mta.message.size": e.get("body")})
            queued.add(1, {"mta.interface": e.get("interface")})
        logger.emit(severity_number=SeverityNumber.INFO, severity_text="INFO", body=f"{action} {e.get('id')}",
                    attributes={k: v for k, v in attrs.items() if v is not None})
    lp.shutdown()
    tp.shutdown()
    mp.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
