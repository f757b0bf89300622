"""Baseline for bench/remote_log.py: the sidecar's remote-log work written as a
plain OpenTelemetry Python SDK program, the way one would without otel-mta.

It reads the same datagrams, decodes them with the same decoder (so that only
the OpenTelemetry part is compared) and emits what the sidecar emits at its
default settings, through the SDK's batch processors and OTLP/gRPC exporters:
- a log record per entry with the same attributes (privacy default: domains
  only), the same readable body, the event name and its span's trace context;
- a root span per message, started at QUEUED and ended when every recipient has
  a final outcome or at the first deferral, and a CLIENT span per delivery
  attempt as its child, with the same attributes, status and the "message data
  started" event;
- the same mail metrics: mta.message.queued, mta.message.size,
  mta.delivery.attempts and mta.delivery.duration.
What it leaves out makes it lighter, not heavier: trace ids are the SDK's random
ones (the sidecar derives them from the Message-ID, so later attempts join the
trace), no top-N cap on the recipient-domain metric attribute, no
self-telemetry. Its queues are sized so that the SDK does not drop records
silently (the default 2048 loses most of a burst).

    python bench/sdk_baseline.py --port 31239 --endpoint http://127.0.0.1:4317
"""
from __future__ import annotations

import argparse
import re
import signal
import socket
import sys
import threading
import time
from datetime import datetime, timezone

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
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
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_mta.sources.msgpack_js import DecodeError, decode  # the same decoder: the SDK is what is compared

OUTCOME = {"ACCEPTED": "delivered", "DEFERRED": "deferred", "REJECTED": "rejected"}
SEVERITY = {"QUEUED": SeverityNumber.INFO, "ACCEPTED": SeverityNumber.INFO, "DEFERRED": SeverityNumber.WARN,
            "REJECTED": SeverityNumber.ERROR}
SMTP_REPLY = re.compile(r"^\s*(\d{3})(?:[ -]+(\d\.\d{1,3}\.\d{1,3})\b)?")
ROOT_ATTRS = ("mta.queue_id", "mta.message_id", "mta.interface", "mta.sender.domain", "mta.recipient.domain",
              "mta.recipient.count", "mta.message.size")


def domain(addr):
    if not isinstance(addr, str) or "@" not in addr:
        return None
    return addr.rsplit("@", 1)[-1].strip().rstrip(">").strip().lower() or None


def message_id(raw):
    if not isinstance(raw, str):
        return None
    mid = raw.strip().removeprefix("<").removesuffix(">").strip()
    at = mid.rfind("@")
    return (mid[:at] + "@" + mid[at + 1:].lower() if at >= 0 else mid) or None


def num(value):
    return value if type(value) in (int, float) else None


def present(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if v is not None}


class Baseline:
    def __init__(self, endpoint: str):
        resource = Resource.create({"service.name": "zonemta"})
        self.lp = LoggerProvider(resource=resource)
        self.lp.add_log_record_processor(BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=endpoint, insecure=True), max_queue_size=200_000, schedule_delay_millis=500))
        self.tp = TracerProvider(resource=resource)
        self.tp.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, insecure=True), max_queue_size=200_000, schedule_delay_millis=500))
        self.mp = MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=endpoint, insecure=True), export_interval_millis=60_000)])
        self.logger = self.lp.get_logger("baseline")
        self.tracer = self.tp.get_tracer("baseline")
        meter = self.mp.get_meter("baseline")
        self.queued = meter.create_counter("mta.message.queued")
        self.size = meter.create_histogram("mta.message.size", unit="By")
        self.attempts = meter.create_counter("mta.delivery.attempts")
        self.duration = meter.create_histogram("mta.delivery.duration", unit="s")
        self.roots: dict = {}  # queue id -> [root span, recipients expected, {seq: outcome}]

    def handle(self, e: dict) -> None:
        action, qid, seq = e.get("action"), str(e.get("id")), e.get("seq")
        now = time.time_ns()
        attrs = {"mta.action": action, "mta.queue_id": qid, "mta.delivery.seq": seq,
                 "mta.message_id": message_id(e.get("message-id") or e.get("messageId"))}
        ctx = None
        if action == "QUEUED":
            body, ctx = self.queued_entry(e, qid, attrs, now)
        elif action in OUTCOME:
            body, ctx = self.delivery(e, action, qid, seq, attrs, now)
        else:
            body = f"{action} {qid}"
        self.logger.emit(timestamp=now, observed_timestamp=now, context=ctx,
                         severity_number=SEVERITY.get(action, SeverityNumber.INFO),
                         severity_text=SEVERITY.get(action, SeverityNumber.INFO).name, body=body,
                         attributes=present(attrs), event_name="zonemta." + str(action).lower())

    def queued_entry(self, e, qid, attrs, now):
        to = e.get("to") if isinstance(e.get("to"), str) else ""
        rcpts = [a.strip() for a in to.split(",") if a.strip()]
        doms = sorted({d for d in map(domain, rcpts) if d})
        size = num(e.get("body"))
        iface = e.get("interface")
        attrs.update({"mta.interface": iface, "mta.sender.domain": domain(e.get("from")),
                      "mta.header_from.domain": domain(e.get("headerFrom")), "mta.recipient.count": len(rcpts),
                      "mta.recipient.domain": (doms[0] if len(doms) == 1 else doms) or None,
                      "mta.transport": e.get("transtype"), "mta.message.size": int(size) if size is not None else None,
                      "mta.message.md5": e.get("md5")})
        root = self.tracer.start_span("message", kind=SpanKind.SERVER, start_time=now,
                                      attributes=present({k: attrs.get(k) for k in ROOT_ATTRS}))
        self.roots[qid] = [root, max(len(rcpts), 1), {}]
        self.queued.add(1, present({"mta.interface": iface}))
        if size is not None:
            self.size.record(size, present({"mta.interface": iface}))
        body = f"QUEUED {qid} from {attrs['mta.sender.domain']} for {len(rcpts)} recipients ({', '.join(doms)})"
        return f"{body}, {int(size or 0)} bytes via {iface}", trace.set_span_in_context(root)

    def delivery(self, e, action, qid, seq, attrs, now):
        outcome = OUTCOME[action]
        zone, mx, ip, peer = e.get("zone"), e.get("mx") or None, e.get("ip") or None, e.get("host") or None
        category, response, protocol = e.get("category") or None, e.get("response") or None, e.get("protocol")
        attrs.update({"mta.zone": zone, "mta.delivery.outcome": outcome, "mta.recipient.domain": domain(e.get("to")),
                      "mta.sender.domain": domain(e.get("from")), "mta.return_path.domain": domain(e.get("returnPath")),
                      "mta.mx.host": mx, "server.address": mx, "network.peer.address": peer, "mta.sending_ip": ip,
                      "mta.bounce.category": category, "mta.smtp.response": response})
        m = SMTP_REPLY.match(response) if response else None
        if m:
            attrs["mta.smtp.code"], attrs["mta.smtp.enhanced_status"] = int(m.group(1)), m.group(2)
        size, timer, first_byte = num(e.get("size")), num(e.get("timer")), num(e.get("start"))
        attrs["mta.message.size"] = int(size) if size is not None else None
        attrs["mta.protocol"] = protocol
        if e.get("tlsVersion"):
            attrs.update({"mta.tls.version": e.get("tlsVersion"), "mta.tls.cipher": e.get("tlsCipher") or None,
                          "mta.tls.authorized": e.get("tlsAuthorized") is True})
        if action == "DEFERRED":
            attrs["mta.defer.count"] = e.get("defcount")
        start_ns = now - int(timer * 1e6) if timer is not None else now
        span_attrs = present({**attrs, "server.port": 25 if mx else None, "network.local.address": ip,
                              "network.protocol.name": protocol,
                              "error.type": (category or "rejected") if action == "REJECTED" else None})
        del span_attrs["mta.action"]
        root = self.roots.get(qid)
        parent = trace.set_span_in_context(root[0]) if root else None
        span = self.tracer.start_span("delivery", context=parent, kind=SpanKind.CLIENT, start_time=start_ns,
                                      attributes=span_attrs)
        if first_byte is not None and timer is not None:
            span.add_event("message data started", timestamp=start_ns + int(first_byte * 1e6))
        if action == "REJECTED":
            span.set_status(Status(StatusCode.ERROR, response))
        span.end(end_time=now)
        dom = attrs["mta.recipient.domain"]
        self.attempts.add(1, present({"mta.zone": zone, "mta.delivery.outcome": outcome, "mta.sending_ip": ip,
                                      "mta.bounce.category": category, "mta.recipient.domain": dom}))
        if timer is not None:
            self.duration.record(timer / 1000, present({"mta.zone": zone, "mta.delivery.outcome": outcome}))
            attrs["mta.delivery.duration_ms"] = int(timer)
        if root and action == "DEFERRED":
            self.end_root(qid, "queued", now)
            nxt = num(e.get("nextattempt"))
            if nxt is not None:
                attrs["mta.defer.next_attempt"] = datetime.fromtimestamp(nxt / 1000, timezone.utc).isoformat(
                    timespec="seconds")
        elif root:
            root[2][seq] = outcome
            if len(root[2]) >= root[1]:
                done = list(root[2].values())
                state = ("delivered" if done.count("delivered") == len(done) else
                         "partially_delivered" if "delivered" in done else "bounced")
                self.end_root(qid, state, now, error="rejected" in done)
        via = f" via {mx}[{peer}]" if mx and peer else f" via {mx}" if mx else ""
        body = f"{action}[{category}] " if category else f"{action} "
        body += f"{qid}.{seq} to {dom or '?'}{via} from {ip} in {int(timer or 0)} ms: {response}"
        return body, trace.set_span_in_context(span)

    def end_root(self, qid, state, now, error=False):
        root = self.roots.pop(qid)[0]
        root.set_attribute("mta.message.state", state)
        if error:
            root.set_status(Status(StatusCode.ERROR, "one or more recipients rejected"))
        root.end(end_time=now)

    def shutdown(self):
        for qid in list(self.roots):
            self.end_root(qid, "queued", time.time_ns())
        self.lp.shutdown()
        self.tp.shutdown()
        self.mp.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--endpoint", required=True)
    args = ap.parse_args()
    baseline = Baseline(args.endpoint)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # as the sidecar asks
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
            entry = decode(data)
        except DecodeError:
            continue
        if isinstance(entry, dict) and entry.get("action") and entry.get("id") is not None:
            baseline.handle(entry)
    baseline.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
