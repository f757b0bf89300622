"""The sidecar as an operator runs it, polling the real stack: ZoneMTA's API,
ZoneMTA's database on FerretDB, ZoneMTA's Redis and this host; and
`otel-mta check` with one row per poller."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

from tests.pollers.conftest import area, closed_port

FAST = """\
sources:
  zonemta_api: {interval: 500ms}
  mongodb: {interval: 500ms}
  redis: {interval: 500ms}
  host: {interval: 1s}
"""


def _points(received, name):
    return [(res, {kv.key: kv.value for kv in p.attributes}, p)
            for res, m in received.metrics().get(name, [])
            for p in getattr(m, m.WhichOneof("data")).data_points]


def _value(p):
    return p.as_int if p.WhichOneof("value") == "as_int" else p.as_double


def test_the_sidecar_polls_the_real_stack(sidecar, grpc_receiver, zonemta, smtp_sink, tmp_path):
    smtp_sink.reply("later", "451 4.3.0 Try again later")
    zonemta.send("sender@example.com", ["later@example.org"])
    smtp_sink.wait_for_refused(1)
    cfg = tmp_path / "otel-mta.yaml"
    cfg.write_text(FAST)
    sc = sidecar({"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "500",
                  "OTEL_MTA_ZONEMTA_API_URL": zonemta.api_url, "OTEL_MTA_MONGODB_URI": zonemta.mongo_uri,
                  "OTEL_MTA_REDIS_URL": zonemta.redis_url}, config=cfg)
    rx = grpc_receiver.received

    def deferred_seen(r):
        return any(a.get("mta.queue.state").string_value == "deferred" and _value(p) == 1
                   for _, a, p in _points(r, "mta.queue.size"))

    def everything(r):
        names = set(r.metrics())
        return deferred_seen(r) and {"mta.queue.oldest_age", "redis.uptime", "mongodb.health",
                                     "system.cpu.time", "process.threads", "zonemta.message.push"} <= names

    rx.wait_for(everything, timeout=30, what="queue, Redis, MongoDB, host and ZoneMTA metrics")
    up = {a["poller"].string_value: _value(p) for _, a, p in _points(rx, "otelmta_poller_up")}
    assert up == {"zonemta_api": 1, "mongodb": 1, "redis": 1, "host": 1}
    names = set(rx.metrics())
    assert area("redis") <= names
    # mta.queue.size comes from the API poller only, never twice
    sizes = [(a["mta.zone"].string_value, a["mta.queue.state"].string_value)
             for _, a, p in _points(rx, "mta.queue.size")]
    newest = rx.requests["metrics"][-1][1]
    per_export = [m for rm in newest.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                  if m.name == "mta.queue.size"]
    assert len(per_export) == 1 and len(per_export[0].gauge.data_points) == 4, sizes
    # ZoneMTA's own processes, on the pod's resource
    commands = {res.get("process.command") for res, _, _ in _points(rx, "process.threads")}
    assert "zone-mta: master process" in commands
    with urllib.request.urlopen(f"http://127.0.0.1:{sc.health_port}/readyz", timeout=10) as r:
        ready = json.loads(r.read())
    assert ready["ready"] is True
    assert ready["sources"]["redis"]["up"] is True and ready["sources"]["mongodb"]["last_error"] is None
    assert sc.terminate() == 0
    assert "Traceback" not in sc.output()


def _check(env: dict, cwd) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "K8S_"))}
    return subprocess.run([sys.executable, "-m", "otel_mta", "check"], capture_output=True, text=True,
                          env={**base, "OTEL_MTA_REMOTE_LOG_ENDPOINT": "127.0.0.1:0", "OTEL_MTA_GELF_ENDPOINT": "off",
                               "OTEL_MTA_EVENTS_ENDPOINT": "off", "OTEL_MTA_DATA_DIR": str(cwd / "data"), **env},
                          cwd=cwd, timeout=60)


def test_check_shows_each_poller(zonemta, smtp_sink, tmp_path):
    smtp_sink.reply("later", "451 4.3.0 Try again later")
    zonemta.send("sender@example.com", ["later@example.org"])
    smtp_sink.wait_for_refused(1)
    ok = _check({"OTEL_MTA_ZONEMTA_API_URL": zonemta.api_url, "OTEL_MTA_MONGODB_URI": zonemta.mongo_uri,
                 "OTEL_MTA_REDIS_URL": zonemta.redis_url}, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    rows = {line.split()[0]: line for line in ok.stdout.splitlines()[1:] if line.strip()}
    assert "zones: bounces, default; 0 queued, 1 deferred" in rows["zonemta_api"]
    assert "FerretDB v1.24.2, standalone" in rows["mongodb"]
    assert "zones default; 0 active, 1 deferred" in rows["mongodb"]
    assert rows["redis"].split()[2] == "ok" and "Redis 7." in rows["redis"]
    assert "zone-mta (" in rows["host"]
    # dead targets: one FAIL row each, a clear reason, exit 1, no traceback
    dead = closed_port()
    bad = _check({"OTEL_MTA_ZONEMTA_API_URL": f"http://127.0.0.1:{dead}",
                  "OTEL_MTA_MONGODB_URI": f"mongodb://admin:pw@127.0.0.1:{dead}/zone-mta",
                  "OTEL_MTA_REDIS_URL": f"redis://:pw@127.0.0.1:{dead}/3", "OTEL_MTA_HOST_METRICS": "off"}, tmp_path)
    assert bad.returncode == 1
    rows = {line.split()[0]: line for line in bad.stdout.splitlines()[1:] if line.strip()}
    assert rows["zonemta_api"].endswith("FAIL    connection refused")
    assert rows["redis"].endswith("FAIL    connection refused")
    assert rows["mongodb"].endswith(f"FAIL    cannot reach 127.0.0.1:{dead}: connection refused")
    assert "host" not in rows
    assert "pw" not in bad.stdout + bad.stderr and "Traceback" not in bad.stderr
