"""The whole path on real parts: ZoneMTA (npm, on FerretDB and Redis) with our
plugin -> the sidecar -> the gateway Collector we build, running the config
the chart renders -> Prometheus (remote write), VictoriaMetrics, VictoriaLogs
and Jaeger, all running on loopback (tests/backends/servers.py).

`fanout` starts it all and returns a `Fanout`; every process is stopped after
the test. Each backend is asked the way an operator would ask it.
"""
from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from otel_mta import ids
from tests.backends.rendered_gateway import PROFILES, RenderedGateway, helm_bin, render_chart
from tests.backends.servers import Jaeger, Prometheus, VictoriaLogs, VictoriaMetrics
from tests.collector.otelcol_harness import Collector, build_collector
from tests.events.conftest import PLUGIN_DIR, ensure_plugin_modules
from tests.stack.proc import free_port

SENDER = "alice@sender.test"
RECIPIENT = "bob@rcpt.test"
# The sidecar polls fast, so the pollers' metrics are there within seconds; attempt
# spans wait up to 15 s for the plugin's phases on a busy machine (as in tests/events).
SIDECAR_CONFIG = """\
correlation: {hold: 15s}
sources:
  zonemta_api: {interval: 1s, max_backoff: 2s}
  mongodb: {interval: 2s, max_backoff: 4s}
  redis: {interval: 1s, max_backoff: 2s}
  host: {interval: 2s}
"""


def wait_until(probe, timeout: float, what: str, every: float = 0.5):
    """Call probe() until it returns something truthy; return that. Errors mean "not yet"."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (AssertionError, OSError, ValueError) as err:
            last = err
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f}s" + (f" (last error: {last})" if last else ""))
        time.sleep(every)


@dataclass
class Message:
    message_id: str           # as sent
    trace_id: str             # hex, derived from the Message-ID (docs/trace-ids.md)


@dataclass
class Fanout:
    prometheus: Prometheus
    victoriametrics: VictoriaMetrics
    victorialogs: VictoriaLogs
    jaeger: Jaeger
    gateway: Collector
    gateway_metrics_url: str
    zonemta: object
    sidecar: object
    sink: object
    rendered: RenderedGateway
    otelcol_bin: Path
    gateway_work: Path

    def restart_gateway(self) -> None:
        """Stop the gateway (SIGTERM) and start it again on the same ports and data dir,
        as a pod's container restart would."""
        assert self.gateway.stop() == 0, self.gateway.log()[-3000:]
        self.gateway = self.rendered.start(self.otelcol_bin, self.gateway_work, replacing=self.gateway)

    def send(self, n: int, tag: str = "fanout") -> Message:
        mid = self.zonemta.send(SENDER, [RECIPIENT], subject=f"otel-mta {tag} {n}",
                                message_id=f"<{tag}-{n}-{time.time_ns()}@sender.test>")
        return Message(mid, ids.trace_id_for(ids.normalize_message_id(mid), None).hex())

    # -- what each backend answers -------------------------------------------------------
    def jaeger_spans(self, msg: Message) -> dict[str, list[dict]]:
        """Span name -> spans of the message's trace in Jaeger ({} while it has none)."""
        trace = self.jaeger.trace(msg.trace_id)
        out: dict[str, list[dict]] = {}
        for span in (trace or {}).get("spans", []):
            out.setdefault(span["operationName"], []).append(span)
        return out

    def delivered_trace(self, msg: Message) -> dict[str, list[dict]] | None:
        spans = self.jaeger_spans(msg)
        return spans if spans.get("message") and spans.get("delivery") else None

    def log_records(self, msg: Message) -> list[dict]:
        return self.victorialogs.query(f'trace_id:="{msg.trace_id}"')

    def gateway_metric(self, name: str, **labels) -> float | None:
        """Sum of one of the gateway's own metrics (Prometheus text format) over the
        matching series; None when it has none (the Collector exports a counter
        only once it has counted something)."""
        from prometheus_client.parser import text_string_to_metric_families
        from tests.backends.servers import http_get
        status, body = http_get(self.gateway_metrics_url)
        assert status == 200, body[:500]
        values = [sample.value for family in text_string_to_metric_families(body.decode())
                  for sample in family.samples
                  if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())]
        return sum(values) if values else None


@pytest.fixture(scope="session")
def backend_binaries():
    """Build (or find cached) every backend and the Collector before any test times itself."""
    from tests.backends.servers import backend_bin
    for name in ("prometheus", "victoria-metrics", "victoria-logs", "jaeger"):
        backend_bin(name)
    return build_collector()


@pytest.fixture
def fanout(backend_binaries, zonemta_factory, smtp_sink, sidecar, tmp_path) -> Fanout:
    otelcol_bin = backend_binaries
    ensure_plugin_modules()
    stops = []          # each process we start, stopped in reverse order after the test
    f: Fanout | None = None
    try:
        prom = Prometheus(tmp_path / "prometheus")
        stops.append(prom.stop)
        # VictoriaMetrics as docs/backends.md runs it: Prometheus names for OTLP metrics
        vm = VictoriaMetrics(tmp_path / "victoria-metrics", ["-opentelemetry.usePrometheusNaming"])
        stops.append(vm.stop)
        vl = VictoriaLogs(tmp_path / "victoria-logs")
        stops.append(vl.stop)
        jaeger = Jaeger(tmp_path / "jaeger", persistent=True)
        stops.append(jaeger.stop)

        # The gateway: the chart's VictoriaMetrics + VictoriaLogs + Jaeger profile, plus
        # Prometheus remote write, pointed at the running backends.
        docs = render_chart(helm_bin(), values_files=[PROFILES / "victoria-jaeger.yaml"], values={
            "gateway.backends.victoriametrics.endpoint": json.dumps(vm.base),
            "gateway.backends.victorialogs.endpoint": json.dumps(vl.base),
            "gateway.backends.jaeger.endpoint": json.dumps(jaeger.otlp_grpc_endpoint),
            "gateway.backends.prometheus.enabled": "true",
            "gateway.backends.prometheus.endpoint": json.dumps(prom.remote_write_url)})
        rendered = RenderedGateway.from_manifests(docs, tmp_path / "gateway-conf")
        gateway = rendered.start(otelcol_bin, tmp_path / "gateway")
        stops.append(lambda: (f.gateway if f else gateway).stop())   # the one running now
        metrics_url = f"http://127.0.0.1:{rendered.last_metrics_port}/metrics"

        # ZoneMTA first (the sidecar polls its API, database and Redis), sending its
        # remote log and the plugin's events to the ports the sidecar will take.
        remote_log_port, events_port = free_port(socket.SOCK_DGRAM), free_port()
        zm = zonemta_factory(remote_log_port=remote_log_port, plugins={str(PLUGIN_DIR): {
            "enabled": ["main", "receiver", "sender"], "url": f"http://127.0.0.1:{events_port}",
            "flushIntervalMs": 200, "healthIntervalMs": 2000}})
        cfg = tmp_path / "otel-mta.yaml"
        cfg.write_text(SIDECAR_CONFIG)
        sc = sidecar({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{gateway.grpc_endpoint}",
                      "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                      "OTEL_MTA_REMOTE_LOG_ENDPOINT": f"127.0.0.1:{remote_log_port}",
                      "OTEL_MTA_EVENTS_ENDPOINT": f"127.0.0.1:{events_port}",
                      "OTEL_MTA_ZONEMTA_API_URL": zm.api_url, "OTEL_MTA_MONGODB_URI": zm.mongo_uri,
                      "OTEL_MTA_REDIS_URL": zm.redis_url}, config=cfg)
        f = Fanout(prom, vm, vl, jaeger, gateway, metrics_url, zm, sc, smtp_sink, rendered, otelcol_bin,
                   tmp_path / "gateway")
        yield f
    finally:
        for stop in reversed(stops):
            stop()
