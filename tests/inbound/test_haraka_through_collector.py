"""The Haraka end-to-end flow with the real Collector in the middle, deployed as
collector-config/README.md says: gateway.yaml plus one backend file
(backends/otlp-grpc.yaml, pointed at an OTLP receiver standing in for the
backend). Real Haraka 3.3.4 with our plugin -> real sidecar -> Collector ->
receiver: messages accepted, refused, without a Message-ID, and one Haraka
relays itself to an SMTP sink. What the plugin sent is recorded on its way
to the sidecar, and the same batches through an in-process pipeline say what
the sidecar sent; Haraka's spans (inbound, delivery, message.final) and log
records must come out of the Collector equal to that, field for field (ids,
times, attributes, events, status, bodies, severities, resources), none
lost, none added; its metrics arrive too."""
from __future__ import annotations

import gzip
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from otel_mta import config
from otel_mta.pipeline import Pipeline
from otel_mta.sources.events_ingest import Ingest
from tests.collector.otelcol_harness import build_collector, start_collector
from tests.otlp_receiver import REQUEST, Received, attrs
from tests.stack.proc import LOOPBACK, free_port

POLICY = ["otel-mta", "test_policy", "rcpt_to.in_host_list", "queue/discard"]
# the same settings for the sidecar process and the replay: log lines wait for their
# transaction however slow the machine is (correlation.hold), so both hold the same ones
SETTINGS = "correlation:\n  hold: 60s\n"


class RecordingProxy:
    """Between the plugin and the sidecar's events endpoint: forwards each
    request as it is (gzip body, headers) and keeps the batches the sidecar
    accepted (2xx)."""

    def __init__(self, target: str):
        self.batches: list[dict] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length",
                                                                                      "connection")}
                req = urllib.request.Request(target + self.path, data=body, headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:
                        status, answer = resp.status, resp.read()
                except urllib.error.HTTPError as err:
                    status, answer = err.code, err.read()
                if 200 <= status < 300:
                    raw = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
                    proxy.batches.append(json.loads(raw))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, free_port()), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, predicate, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate([e for b in list(self.batches) for e in b["events"]]):
            assert time.monotonic() < deadline, f"the plugin sent no {what} within {timeout}s"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _span_row(res: dict, s) -> tuple:
    return (json.dumps(res, sort_keys=True), s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name,
            s.kind, s.start_time_unix_nano, s.end_time_unix_nano, json.dumps(attrs(s.attributes), sort_keys=True),
            tuple((e.time_unix_nano, e.name, json.dumps(attrs(e.attributes), sort_keys=True)) for e in s.events),
            s.status.code, s.status.message, s.flags)


def _log_row(res: dict, r) -> tuple:
    # not observed_time_unix_nano: when the sidecar (or the replay) saw it
    return (json.dumps(res, sort_keys=True), r.time_unix_nano, r.severity_number, r.severity_text,
            r.body.string_value, json.dumps(attrs(r.attributes), sort_keys=True), r.trace_id.hex(), r.span_id.hex(),
            r.event_name, r.flags)


def haraka_rows(rx: Received) -> tuple[list, list]:
    spans = sorted(_span_row(res, s) for res, s in rx.spans() if res.get("service.name") == "haraka")
    logs = sorted(_log_row(res, r) for res, r in rx.log_records() if res.get("service.name") == "haraka")
    return spans, logs


def replay(batches: list[dict], settings_path: Path) -> tuple[list, list]:
    """What the sidecar sent for these batches: the same mapping, in process."""
    rx = Received()
    settings = config.load(settings_path, environ={"OTEL_MTA_DATA_DIR": "/nonexistent"})
    p = Pipeline(settings, lambda sig, payload, n: rx.add(sig, REQUEST[sig].FromString(payload)))
    ingest = Ingest(p)
    for b in batches:
        assert not ingest.batch(json.loads(json.dumps(b))).rejected
    p.tick(flush_all=True)
    p.flush()
    return haraka_rows(rx)


def test_haraka_through_the_sidecar_and_the_collector_gateway(haraka_factory, events_sidecar, grpc_receiver,
                                                              smtp_sink, tmp_path):
    col = start_collector(build_collector(), tmp_path / "otelcol", ["gateway.yaml", "backends/otlp-grpc.yaml"],
                          env={"OTLP_ENDPOINT": grpc_receiver.endpoint.removeprefix("http://"),
                               "OTLP_INSECURE": "true", "OTELCOL_METRICS_PORT": str(free_port())})
    proxy = None
    try:
        settings = tmp_path / "otel-mta.yaml"
        settings.write_text(SETTINGS)
        sc = events_sidecar(env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{col.grpc_endpoint}",
                                 "OTEL_METRIC_EXPORT_INTERVAL": "1000"}, config=settings)
        proxy = RecordingProxy(sc.events_url)
        haraka = haraka_factory(
            plugins=POLICY, events_url=proxy.url, env={"YES_REALLY_DO_DISCARD": "1"},
            config={"otel-mta.ini": f"url={proxy.url}\n[buffer]\nflush_interval_ms=100\n[events]\nlog_lines=true\n",
                    "test_policy.ini": f"relay_helo=relay.client.test\nmx={smtp_sink.host}:{smtp_sink.port}\n",
                    "outbound.ini": "local_mx_ok=true\nenable_tls=false\n"})
        _, refused, final = haraka.send("alice@sender.test", ["bob@rcpt.test", "nobody@rcpt.test", "later@rcpt.test"],
                                        message_id="<via-collector-1@Sender.TEST>")
        assert final[0] == 250 and set(refused) == {"nobody@rcpt.test", "later@rcpt.test"}
        _, _, spam = haraka.send("alice@sender.test", ["carol@rcpt.test"], subject="spam here",
                                 message_id="<via-collector-2@sender.test>")
        assert spam[0] == 550
        _, _, nomid = haraka.send("", ["bob@rcpt.test"], message_id=None)
        assert nomid[0] == 250
        # and one Haraka relays itself, delivered at once: its delivery and message.final spans
        _, _, relayed = haraka.send("alice@sender.test", ["dave@dest.test"], message_id="<via-collector-3@sender.test>",
                                    helo="relay.client.test")
        assert relayed[0] == 250
        smtp_sink.wait_for_messages(1)
        proxy.wait_for(lambda events: any(e["type"] == "haraka.delivery" for e in events), "the delivery event")
        haraka.stop()                  # the plugin sends what it holds (graceful shutdown)
        assert sc.terminate() == 0     # the sidecar flushes its spans, logs and last metrics to the Collector

        want_spans, want_logs = replay(proxy.batches, settings)
        assert len(want_spans) == 6 and len(want_logs) > 10      # 4 inbound, a delivery, a message.final
        rx = grpc_receiver.received
        # the gateway batches for up to 2 s, and its exporter retries: wait until nothing is missing
        def arrived(r):
            spans, logs = haraka_rows(r)
            return len(spans) >= len(want_spans) and len(logs) >= len(want_logs)

        rx.wait_for(arrived, timeout=60, what="Haraka's spans and logs through the Collector")
        got_spans, got_logs = haraka_rows(rx)
        assert got_spans == want_spans
        assert got_logs == want_logs
        names = sorted(row[4] for row in got_spans)
        assert names == ["delivery", "inbound", "inbound", "inbound", "inbound", "message.final"]
        events = {row[8] for row in got_logs}
        assert {"haraka.transaction", "haraka.rcpt", "haraka.log"} <= events

        # Haraka's metrics came through too
        def transactions(r):
            return {attrs(p.attributes)["mta.inbound.outcome"]: p.as_int
                    for res, m in r.metrics().get("mta.inbound.transactions", ())
                    if res.get("service.name") == "haraka" for p in m.sum.data_points}

        rx.wait_for(lambda r: transactions(r) == {"accepted": 3, "refused": 1}, timeout=30,
                    what="mta.inbound.transactions through the Collector")
    finally:
        if proxy is not None:
            proxy.stop()
        col.stop()
