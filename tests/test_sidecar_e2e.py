"""The sidecar as an operator runs it: a process that receives ZoneMTA's remote
log over UDP and exports to a real OTLP receiver (gRPC or HTTP) or to files."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from otel_mta.export.senders import read_jsonl
from tests.otlp_receiver import attrs

ENTRIES = [json.loads(l) for l in (Path(__file__).parent / "fixtures" / "remote_log" / "entries.jsonl").read_text().splitlines()]


def _n_logs(rx):
    return len(rx.log_records())


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_remote_log_to_a_real_otlp_receiver(sidecar, js_encode, grpc_receiver, http_receiver, protocol):
    rx = grpc_receiver if protocol == "grpc" else http_receiver
    sc = sidecar({"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                  "OTEL_METRIC_EXPORT_INTERVAL": "500", "OTEL_SERVICE_NAME": "otel-mta-test",
                  "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,service.name=ignored",
                  "K8S_POD_NAME": "zonemta-0", "K8S_NAMESPACE_NAME": "mail", "K8S_NODE_NAME": "node-1"})
    sc.send(js_encode(ENTRIES))
    got = rx.received.wait_for(lambda r: _n_logs(r) >= len(ENTRIES) and r.metrics().get("mta.delivery.attempts"),
                               what="all log records and delivery metrics")
    assert got
    res, _ = rx.received.log_records()[0]
    assert res["service.name"] == "zonemta" and res["k8s.pod.name"] == "zonemta-0"
    assert res["k8s.namespace.name"] == "mail" and res["host.name"] == "node-1"
    assert res["deployment.environment"] == "test" and res["service.instance.id"] == "zonemta-0"
    own = [r for r, _ in rx.received.metrics()["otelmta_receiver_accepted_records"]]
    assert own[0]["service.name"] == "otel-mta-test"
    assert sc.terminate() == 0
    # shutdown flushed the open root spans of messages still in flight
    assert any(s.name == "message" for _, s in rx.received.spans())


def test_sigterm_flushes_everything_and_exits_zero_quickly(sidecar, js_encode, grpc_receiver):
    # long delays: only the shutdown flush can deliver these in time
    sc = sidecar({"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint, "OTEL_BLRP_SCHEDULE_DELAY": "60000",
                  "OTEL_BSP_SCHEDULE_DELAY": "60000", "OTEL_METRIC_EXPORT_INTERVAL": "600000"})
    entries = [{**ENTRIES[3], "seq": f"{i:03x}"} for i in range(1, 301)]
    sc.send(js_encode(entries), pause_every=50)
    time.sleep(0.5)
    started = time.time()
    assert sc.terminate() == 0
    assert time.time() - started < 10
    rx = grpc_receiver.received
    assert _n_logs(rx) == 300
    assert len([s for _, s in rx.spans() if s.name == "delivery"]) == 300
    [(_, point)] = rx.last_points("mta.delivery.attempts")
    assert point.as_int == 300
    assert "stopped: exported 300 log records" in sc.output()
    # the last self-metrics are taken once the flush was sent: they count it, and
    # show no backlog (a backend keeps a stopped sidecar's last values for minutes)
    [(_, sent)] = rx.last_points("otelmta_exporter_sent_log_records")
    assert sent.as_int == 300
    [(_, queued)] = rx.last_points("otelmta_exporter_queue_size")
    assert queued.as_int == 0


def test_embedded_file_sink_is_the_default(sidecar, js_encode, tmp_path):
    sc = sidecar({"OTEL_METRIC_EXPORT_INTERVAL": "300"})
    assert "writing OTLP JSON to" in sc.output()
    sc.send(js_encode(ENTRIES))
    time.sleep(1.0)
    assert sc.terminate() == 0
    out = sc.data_dir / "otlp"
    logs = read_jsonl(out / "logs.jsonl")
    records = [r for line in logs for rl in line["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]]
    assert len(records) == len(ENTRIES)
    # OTLP/JSON as the Collector's file exporter writes it: hex ids, camelCase, int enums
    assert all(len(r["traceId"]) == 32 for r in records)
    spans = [s for line in read_jsonl(out / "traces.jsonl") for rs in line["resourceSpans"]
             for ss in rs["scopeSpans"] for s in ss["spans"]]
    # SERVER roots, CLIENT attempts, and an INTERNAL message.final: a deferred message's outcome
    assert {s["kind"] for s in spans} == {1, 2, 3}
    metrics = {m["name"] for line in read_jsonl(out / "metrics.jsonl") for rm in line["resourceMetrics"]
               for sm in rm["scopeMetrics"] for m in sm["metrics"]}
    assert {"mta.delivery.attempts", "mta.message.queued", "otelmta_receiver_accepted_records"} <= metrics


def test_file_sink_rotates_by_size(tmp_path):
    from otel_mta.export.senders import FileSink
    from otel_mta.signals import wire
    sink = FileSink(tmp_path, max_bytes=2000, backups=2)
    payload = wire.request([(wire.resource({"service.name": "x"}), wire.scope("s", "1"), [b""] * 10)])
    for _ in range(40):
        assert sink.send("logs", payload).ok
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "logs.jsonl" in files and len(files) == 3  # current + 2 backups
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())


def test_health_endpoints(sidecar):
    sc = sidecar()
    ready = sc.wait_ready()
    assert ready["ready"] is True and ready["sources"]["remote_log"]["ready"] is True
    with urllib.request.urlopen(f"http://127.0.0.1:{sc.health_port}/healthz", timeout=10) as r:
        assert json.loads(r.read()) == {"status": "ok"}
    assert sc.terminate() == 0


def test_port_in_use_is_a_clear_error(sidecar, tmp_path):
    import socket
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    sc = sidecar({"OTEL_MTA_REMOTE_LOG_ENDPOINT": f"127.0.0.1:{taken.getsockname()[1]}"}, wait=False)
    assert sc.proc.wait(15) == 1
    out = sc.output()
    assert "cannot start remote_log" in out and "Address already in use" in out and "Traceback" not in out
    taken.close()


def _cli(*args, env=None, cwd=None):
    import os
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-m", "otel_mta", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, cwd=cwd, timeout=30)


@pytest.mark.parametrize("env,config,expected", [
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "json"}, None,
     "config error: exporter.protocol = 'json' (from OTEL_EXPORTER_OTLP_PROTOCOL): expected 'grpc' or 'http/protobuf'"),
    ({"OTEL_MTA_REMOTE_LOG_ENDPOINT": "localhost"}, None,
     "config error: sources.remote_log.endpoint = 'localhost' (from OTEL_MTA_REMOTE_LOG_ENDPOINT): expected host:port (e.g. 0.0.0.0:31239), a URL, or off"),
    ({"OTEL_METRIC_EXPORT_INTERVAL": "1m"}, None,
     "config error: OTEL_METRIC_EXPORT_INTERVAL='1m': expected an integer number of milliseconds"),
    ({}, "batch:\n  max_batch: 0\n", "config error: batch.max_batch = 0 (in {cfg}): Input should be greater than or equal to 1"),
    ({}, "sources:\n  remote_log:\n    port: 1\n", "config error: sources.remote_log.port (in {cfg}): unknown setting (see docs/configuration.md)"),
    ({}, "privacy:\n  recipient: hmac\n", "config error: privacy (in {cfg}): hmac_key (OTEL_MTA_HMAC_KEY) is required when a privacy mode is hmac"),
    ({}, "exporter: [\n", "config error: {cfg} line 2: not valid YAML"),
    ({"OTEL_MTA_HMAC_KEY": "s3cret", "OTEL_MTA_LOG_LEVEL": "loud"}, None,
     "config error: log_level = 'loud' (from OTEL_MTA_LOG_LEVEL): expected 'debug', 'info', 'warning' or 'error'"),
])
def test_bad_configuration_is_one_clear_line_and_exit_2(tmp_path, env, config, expected):
    args = []
    cfg = tmp_path / "otel-mta.yaml"
    if config is not None:
        cfg.write_text(config)
        args = ["--config", str(cfg)]
    for command in ("run", "check"):
        res = _cli(command, *args, env=env)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected.format(cfg=cfg)), res.stderr
        assert "s3cret" not in res.stderr


def test_yaml_file_and_environment_wins(tmp_path, grpc_receiver):
    from otel_mta import config
    cfg = tmp_path / "c.yaml"
    cfg.write_text("exporter:\n  endpoint: http://yaml:4317\n  headers: {a: '1'}\nbatch:\n  logs_delay: 2s\n")
    s = config.load(cfg, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4317",
                                  "OTEL_EXPORTER_OTLP_HEADERS": "b=2,api-key=x%3Dy"})
    assert s.exporter.endpoint == "http://env:4317"
    assert s.exporter.headers == {"a": "1", "b": "2", "api-key": "x=y"}
    assert s.batch.logs_delay == 2.0


def test_version():
    from otel_mta import __version__
    res = _cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"otel-mta {__version__}"


def test_check_prints_a_table_and_fails_on_an_unreachable_collector(tmp_path, grpc_receiver):
    env = {"OTEL_MTA_REMOTE_LOG_ENDPOINT": "127.0.0.1:0", "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint,
           "OTEL_MTA_GELF_ENDPOINT": "off", "OTEL_MTA_EVENTS_ENDPOINT": "off", "OTEL_MTA_ZONEMTA_API_URL": "off"}
    ok = _cli("check", env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    header, *rows = ok.stdout.strip().splitlines()
    assert header.split()[:4] == ["SOURCE", "ENDPOINT", "STATUS", "DETAIL"]
    assert any(r.startswith("remote_log") and " ok " in r for r in rows)
    assert any(r.startswith("exporter") and "collector accepted" in r for r in rows)
    bad = _cli("check", env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_TIMEOUT": "2000"},
               cwd=tmp_path)
    assert bad.returncode == 1
    assert any(r.startswith("exporter") and "FAIL" in r and "UNAVAILABLE" in r for r in bad.stdout.splitlines())


def test_collector_outage_with_spool_loses_nothing(sidecar, js_encode, tmp_path):
    """A scaled-down run of the 5-minute outage at 1,000 entries/s
    (bench/outage.py runs the full one): the collector is down while 4,000
    entries arrive at ~1,000/s, then comes back; every record arrives."""
    from tests.otlp_receiver import GrpcReceiver
    from tests.conftest import free_port
    port = free_port()
    cfg = tmp_path / "otel-mta.yaml"
    cfg.write_text("exporter:\n  queue_size: 64KiB\n  initial_backoff: 100ms\n  max_backoff: 500ms\n"
                   "  spool:\n    enabled: true\n    max_size: 256MiB\n")
    sc = sidecar({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_METRIC_EXPORT_INTERVAL": "500"},
                 config=cfg)
    base = ENTRIES[3]
    datagrams = js_encode([{**base, "id": f"18c5f3d2a3e{n:07x}", "seq": "001"} for n in range(4000)])
    for i in range(0, 4000, 100):
        sc.send(datagrams[i:i + 100])
        time.sleep(0.1)
    assert any((sc.data_dir / "spool").rglob("*.spool")), "the outage should have spooled to disk"
    rx = GrpcReceiver(port)
    try:
        rx.received.wait_for(lambda r: _n_logs(r) >= 4000, timeout=60, what="all 4000 log records")
        ids = [attrs(r.attributes)["mta.queue_id"] for _, r in rx.received.log_records()]
        assert ids == [f"18c5f3d2a3e{n:07x}" for n in range(4000)]  # exactly once, in order
        rx.received.wait_for(lambda r: r.last_points("otelmta_exporter_spool_size"), what="spool size metric")
        assert sc.terminate() == 0
        assert not rx.received.last_points("otelmta_exporter_send_failed_log_records")
        assert "export to http://" in sc.output() or "recovered" in sc.output()
    finally:
        rx.stop()


def test_permanent_export_errors_are_reported(sidecar, js_encode, grpc_receiver):
    import grpc
    rx = grpc_receiver.received
    rx.fail_with, rx.fail_signals = grpc.StatusCode.INVALID_ARGUMENT, {"logs", "traces", "metrics"}
    rx.fail_calls = {"logs": 1, "traces": 1, "metrics": 1}  # the first of each is refused for good
    sc = sidecar({"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "300"})
    sc.send(js_encode(ENTRIES[:4]))
    time.sleep(0.6)
    sc.send(js_encode(ENTRIES[4:]))
    rx.wait_for(lambda r: r.last_points("otelmta_exporter_send_failed_log_records")
                and r.last_points("otelmta_exporter_send_failed_spans")
                and r.last_points("otelmta_exporter_send_failed_metric_points"), what="failure counters")
    [(a, p)] = rx.last_points("otelmta_exporter_send_failed_log_records")
    assert a == {"exporter": "otlp_grpc", "reason": "permanent_error"} and p.as_int >= 1
    assert sc.terminate() == 0
    assert "refused them with a permanent error: INVALID_ARGUMENT" in sc.output()


STUBBORN_SIDECAR = """
import asyncio, sys
from otel_mta.sources.host import HostPoller

async def stubborn(self, points):   # a client library that swallows every cancel
    print("poll started", flush=True)
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass

HostPoller.collect = stubborn
from otel_mta.cli import main
sys.exit(main(["run"]))
"""


def test_sigterm_ends_the_sidecar_with_exit_0_even_when_a_poll_task_ignores_its_cancel(tmp_path):
    """The host poller's collect swallows every cancellation (its own timeout's
    too): SIGTERM still ends the process, exit 0, within Kubernetes' 10 s,
    and the abandoned task is named in the log."""
    import os
    import signal as sig
    from tests.conftest import free_port
    health = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
           "OTEL_MTA_REMOTE_LOG_ENDPOINT": "127.0.0.1:0", "OTEL_MTA_GELF_ENDPOINT": "off",
           "OTEL_MTA_EVENTS_ENDPOINT": "off", "OTEL_MTA_ZONEMTA_API_URL": "off",
           "OTEL_MTA_HEALTH_ENDPOINT": f"127.0.0.1:{health}", "OTEL_MTA_DATA_DIR": str(tmp_path / "data"),
           "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "sidecar.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", STUBBORN_SIDECAR], env=env, cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 20
            while "poll started" not in log.read_text():
                assert time.time() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.05)
            started = time.time()
            proc.send_signal(sig.SIGTERM)
            assert proc.wait(15) == 0, log.read_text()
            assert time.time() - started < 10
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert "host poll task ignored its cancel" in text and "stopped: exported" in text, text


def test_check_beside_a_running_sidecar_says_whose_port_it_is(sidecar):
    """`otel-mta check` in a pod whose sidecar runs: the listener's port is
    taken by that sidecar, which its health endpoint confirms: ok, not a
    failure. A port taken by anything else is a failure that says where a
    running otel-mta would have answered."""
    import socket
    sc = sidecar()
    env = {k: v for k, v in sc.env.items() if k.startswith(("OTEL_", "PYTHON"))}
    res = _cli("check", env=env, cwd=sc.data_dir.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    [row] = [r for r in res.stdout.splitlines() if r.startswith("remote_log")]
    assert " ok " in row and "Address already in use" not in row
    assert f"port in use by the otel-mta running here (http://127.0.0.1:{sc.health_port}/readyz" in row
    assert sc.terminate() == 0
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", sc.remote_log_port))
    try:
        res = _cli("check", env=env, cwd=sc.data_dir.parent)
    finally:
        taken.close()
    assert res.returncode == 1
    [row] = [r for r in res.stdout.splitlines() if r.startswith("remote_log")]
    assert "FAIL" in row and f"a running otel-mta would answer at http://127.0.0.1:{sc.health_port}/healthz" in row
