"""One run of the whole pipeline into real backends, for the dashboard and rule tests.

    real ZoneMTA (+ our plugin, remote log, GELF)  --+
    tools/traffic.py's mix, ZoneMTA's real encoder --+--> sidecar "mail-0" -----+
    a MongoDB replica-set member (mockupdb)  -------------> sidecar "rs-0" -------+--> Collector (gateway.yaml
    a second ZoneMTA's mix, in bursts, garbage ----> sidecar "incident-0" --+     |    + backends/prometheus.yaml
                                                       (through TcpProxy: the     |    + backends/victoriametrics.yaml
                                                        Collector goes away) -----+    + file exporters)
                                                                               --> Prometheus 3 (+ our rules)
                                                                               --> VictoriaMetrics (+ vmalert, our rules)
                                                                               --> OTLP JSON files (for chdb)

The sidecar "mail-0" polls the ZoneMTA API, ZoneMTA's database (FerretDB),
ZoneMTA's Redis and the host, as it would beside a ZoneMTA pod. FerretDB has no
replica set, so a second sidecar polls the mockupdb member (MongoDB 7.0-shaped
replies) for the replication metrics; it is another pod (`instance`).

Mail: through the real ZoneMTA, messages that are delivered, deferred (451,
still queued at the end) and rejected (550, plus ZoneMTA's bounce); and, over
the run, `TRAFFIC_MESSAGES` messages of tools/traffic.py's realistic mix
(three zones, fifty domains, three sending IPs; delivered, greylisted, rejected)
sent as ZoneMTA's remote log. Metrics are exported every second, so rate() over
a few minutes has many samples.

Incidents (incidents.py), each from its real cause: a sending IP that
receivers refuse (blacklist, block, policy), suppressed and deleted deliveries
on the real ZoneMTA; and a third sidecar that loses its Collector twice (spool,
export failures), drops datagrams from a too-small socket buffer, gets garbage
and polls a Redis that is not there. They carry their own labels
(incidents.INCIDENT_LABELS); everything else is healthy traffic.

Prometheus gets the metrics by remote write (backends/prometheus.yaml), and
VictoriaMetrics by OTLP (backends/victoriametrics.yaml, as the chart's
victoria-jaeger profile sends them), run as docs/dashboards.md says:
-opentelemetry.usePrometheusNaming and monitoring/victoriametrics-relabel.yaml
(service.name -> job, service.instance.id -> instance). vmalert evaluates the
same rule file against it.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.backends.servers import Prometheus, VictoriaMetrics, VMAlert, http_get_json
from tests.collector.otelcol_harness import build_collector, start_collector
from tests.monitoring import incidents
from tests.stack.ferretdb import FerretDB
from tests.stack.mongo_mock import MongoReplicaSetMock
from tests.stack.proc import free_port
from tests.stack.redis_server import RedisServer
from tests.stack.smtp_sink import SmtpSink
from tests.stack.zonemta import ZoneMTA

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "monitoring" / "generated" / "rules"
OVERLAY = Path(__file__).with_name("collector-overlay.yaml")
VM_RELABEL = ROOT / "monitoring" / "victoriametrics-relabel.yaml"
PLUGIN_DIR = ROOT / "zonemta-plugin"
RUN_SECONDS = 50          # traffic flows this long
TRAFFIC_MESSAGES = 600    # tools/traffic.py messages over the run (~1,000 entries)

sys.path.insert(0, str(ROOT / "tools"))
from traffic import encode, generate  # noqa: E402

# Real ZoneMTA mail: recipient -> what the SMTP sink answers (by substring)
SINK_REPLIES = {"@yahoo.test": "451 4.7.1 Greylisted, please try again later",
                "@outlook.test": "550 5.1.1 The email account that you tried to reach does not exist"}
REAL_MAIL = [  # (recipient, Message-ID)
    *((f"user{i}@gmail.test", f"<run-delivered-{i}@sender.test>") for i in range(6)),
    *((f"later{i}@yahoo.test", f"<run-deferred-{i}@sender.test>") for i in range(3)),
    *((f"nobody{i}@outlook.test", f"<run-rejected-{i}@sender.test>") for i in range(2)),
]


@dataclass
class PipelineRun:
    prometheus: Prometheus
    eval_time: float
    otlp: dict
    queue_ids: list = field(default_factory=list)
    message_ids: list = field(default_factory=list)
    work: Path | None = None
    victoriametrics: VictoriaMetrics | None = None
    vmalert: VMAlert | None = None
    vmalert_alerts: list = field(default_factory=list)   # vmalert's active alerts at eval_time
    incidents: incidents.IncidentRun | None = None

    def query(self, expr: str) -> list:
        """Instant query at eval_time; AssertionError on a PromQL error."""
        return self.prometheus.query(expr, self.eval_time)

    def query_vm(self, expr: str) -> list:
        """The same on VictoriaMetrics (MetricsQL)."""
        return self.victoriametrics.query(expr, self.eval_time)

    def backend(self, name: str):
        return {"prometheus": self.prometheus, "victoriametrics": self.victoriametrics}[name]

    def rule_groups(self) -> list:
        return self.prometheus.groups()


def _sidecar(name: str, work: Path, env: dict) -> tuple[subprocess.Popen, int, object]:
    health = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "K8S_"))}
    full = {**base, "K8S_POD_NAME": name, "OTEL_MTA_HEALTH_ENDPOINT": f"127.0.0.1:{health}",
            "OTEL_MTA_DATA_DIR": str(work / "data"), "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_MTA_GELF_ENDPOINT": "off", "OTEL_MTA_EVENTS_ENDPOINT": "off",
            "OTEL_MTA_ZONEMTA_API_URL": "off", "PYTHONUNBUFFERED": "1", **env}
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "sidecar.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "otel_mta", "run", "--config", str(work / "otel-mta.yaml")],
                            env=full, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    return proc, health, log


def _wait_ready(proc: subprocess.Popen, health: int, log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sidecar exited {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            http_get_json(f"http://127.0.0.1:{health}/readyz", 1.0)
            return
        except Exception:
            time.sleep(0.1)
    raise AssertionError(f"sidecar not ready after {timeout}s:\n{log_path.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen, log_path: Path) -> None:
    proc.terminate()
    try:
        rc = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"sidecar did not stop on SIGTERM:\n{log_path.read_text()[-4000:]}")
    if rc != 0:
        raise AssertionError(f"sidecar exited {rc}:\n{log_path.read_text()[-4000:]}")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]


def run_pipeline(work: Path) -> tuple[PipelineRun, list]:
    """Run it all; returns the run and the things to stop afterwards (the backends stay up)."""
    work.mkdir(parents=True, exist_ok=True)
    to_stop: list = []
    rules = sorted(RULES_DIR.glob("*.yaml")) if RULES_DIR.is_dir() else []
    try:
        prom = Prometheus(work / "prometheus", rule_files=rules, evaluation_interval="2s")
        to_stop.append(prom)
        vm = VictoriaMetrics(work / "victoria-metrics", ["-opentelemetry.usePrometheusNaming",
                                                          f"-relabelConfig={VM_RELABEL}", "-search.disableCache"])
        to_stop.append(vm)
        vmalert = VMAlert(work / "vmalert", rules, vm.base, evaluation_interval="2s")
        to_stop.append(vmalert)
        return _run(work, prom, vm, vmalert, to_stop), to_stop
    except BaseException:
        for thing in reversed(to_stop):
            thing.stop()
        raise


def _run(work: Path, prom: Prometheus, vm: VictoriaMetrics, vmalert: VMAlert, to_stop: list) -> PipelineRun:
    col = start_collector(build_collector(), work / "otelcol",
                          ["gateway.yaml", "backends/prometheus.yaml", "backends/victoriametrics.yaml", OVERLAY],
                          env={"PROMETHEUS_REMOTE_WRITE_ENDPOINT": prom.remote_write_url,
                               "VICTORIAMETRICS_ENDPOINT": vm.base,
                               "OTELCOL_METRICS_PORT": str(free_port())})
    to_stop.append(col)
    ferret = FerretDB(work / "ferretdb")
    to_stop.append(ferret)
    sink = SmtpSink()
    to_stop.append(sink)
    for needle, reply in SINK_REPLIES.items():
        sink.reply(needle, reply)
    incidents.script_sink(sink)
    zm_redis = RedisServer(work / "zonemta-redis")
    to_stop.append(zm_redis)
    rs = MongoReplicaSetMock()
    to_stop.append(rs)

    # sidecar beside ZoneMTA: remote log, plugin events, GELF; the pollers
    remote_log, gelf, events = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM), free_port()
    mail_dir, rs_dir, inc_dir = work / "sidecar-mail", work / "sidecar-rs", work / "sidecar-incident"
    for d in (mail_dir, rs_dir, inc_dir):
        d.mkdir(parents=True)
    fast = "sources:\n  zonemta_api: {interval: 1s}\n  mongodb: {interval: 1s}\n  redis: {interval: 1s}\n" \
           "  host: {interval: 1s}\n"
    (mail_dir / "otel-mta.yaml").write_text(fast)
    (rs_dir / "otel-mta.yaml").write_text(fast)
    (inc_dir / "otel-mta.yaml").write_text(incidents.SIDECAR_CONFIG)

    # ZoneMTA first (the sidecar's pollers need its API, database and Redis)
    zm = ZoneMTA(work / "zonemta", mongo_uri=ferret.uri, redis_host=zm_redis.host, redis_port=zm_redis.port,
                 sink_host=sink.host, sink_port=sink.port, remote_log_port=remote_log, gelf_port=gelf,
                 plugins={str(PLUGIN_DIR): {"enabled": ["main", "receiver", "sender"],
                                            "url": f"http://127.0.0.1:{events}",
                                            "flushIntervalMs": 200, "healthIntervalMs": 2000}},
                 config=incidents.zonemta_config(sink))
    to_stop.append(zm)
    # the second ZoneMTA's remote log (incident-0's): the mix with queue ids of its own
    second = generate(incidents.INCIDENT_MESSAGES, seed=13)
    for entry in second:
        entry["id"] = "19d" + entry["id"][3:]
    trouble = incidents.Incidents(zm, col.grpc_endpoint, encode(second))
    to_stop.append(trouble)
    mail_proc, mail_health, mail_log = _sidecar("mail-0", mail_dir, {
        "OTEL_EXPORTER_OTLP_ENDPOINT": col.grpc_endpoint,
        "OTEL_MTA_REMOTE_LOG_ENDPOINT": f"127.0.0.1:{remote_log}",
        "OTEL_MTA_GELF_ENDPOINT": f"127.0.0.1:{gelf}",
        "OTEL_MTA_EVENTS_ENDPOINT": f"127.0.0.1:{events}",
        "OTEL_MTA_ZONEMTA_API_URL": zm.api_url, "OTEL_MTA_MONGODB_URI": zm.mongo_uri,
        "OTEL_MTA_REDIS_URL": zm.redis_url})
    rs_proc, rs_health, rs_log = _sidecar("rs-0", rs_dir, {
        "OTEL_EXPORTER_OTLP_ENDPOINT": col.grpc_endpoint,
        "OTEL_MTA_REMOTE_LOG_ENDPOINT": "off", "OTEL_MTA_HOST_METRICS": "off",
        "OTEL_MTA_MONGODB_URI": rs.uri})
    inc_proc, inc_health, inc_log = _sidecar(incidents.INCIDENT_POD, inc_dir, trouble.sidecar_env())
    trouble.status = lambda: http_get_json(f"http://127.0.0.1:{inc_health}/status")
    sidecars = [(mail_proc, mail_dir / "sidecar.log", mail_log), (rs_proc, rs_dir / "sidecar.log", rs_log),
                (inc_proc, inc_dir / "sidecar.log", inc_log)]
    try:
        datagrams = encode(generate(TRAFFIC_MESSAGES, seed=12))   # while the sidecars start
        _wait_ready(mail_proc, mail_health, mail_dir / "sidecar.log")
        _wait_ready(rs_proc, rs_health, rs_dir / "sidecar.log")
        _wait_ready(inc_proc, inc_health, inc_dir / "sidecar.log")
        trouble.prepare()

        # the mix over the run, interleaved with real ZoneMTA mail in its first half;
        # the incidents on their own timeline beside it
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        trouble.start()
        start = time.monotonic()
        real = list(REAL_MAIL)
        message_ids = []
        for i, d in enumerate(datagrams):
            sock.sendto(d, ("127.0.0.1", remote_log))
            if real and i % 40 == 0:
                rcpt, mid = real.pop(0)
                message_ids.append(zm.send("alice@sender.test", [rcpt], subject="pipeline run", message_id=mid))
            due = start + RUN_SECONDS * (i + 1) / len(datagrams)
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        sock.close()
        for rcpt, mid in real:
            message_ids.append(zm.send("alice@sender.test", [rcpt], subject="pipeline run", message_id=mid))
        record = trouble.join()
        refused = len([m for m in REAL_MAIL if "yahoo" in m[0] or "outlook" in m[0]]) + incidents.refusals_expected()
        sink.wait_for_refused(refused, timeout=60)
        trouble.finish()
        trouble.wait_drained()
        # the last polls and exports, then a clean stop that flushes
        time.sleep(3)
        stopping = time.time()
        for proc, log_path, log in sidecars:
            _stop(proc, log_path)
            log.close()
        sidecars = []
        # the exporters send what they hold, then the backends and the files are complete
        prom.wait_for('count(mta_delivery_attempts_total{mta_delivery_outcome="rejected"})', timeout=30)
        _wait_for_final_samples(prom, vm, stopping, {"mail-0", "rs-0", incidents.INCIDENT_POD})
        _wait_for_same_totals(prom, vm)
        _wait_for_alerts(prom, vmalert, timeout=30)
        # every rule evaluated once more on the complete data, then the instant
        # the tests ask at: ALERTS at eval_time is the last evaluation before it
        _wait_for_rules(prom, vmalert, time.time())
        eval_time = time.time()
        vmalert_alerts = vmalert.alerts()
        col.stop()
    finally:
        for proc, log_path, log in sidecars:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    otlp = {s: _read_jsonl(col.output_dir / f"{s}.jsonl") for s in ("logs", "traces", "metrics")}
    queue_ids = _queue_ids(otlp["logs"], message_ids)
    return PipelineRun(prometheus=prom, eval_time=eval_time, otlp=otlp, queue_ids=queue_ids,
                       message_ids=message_ids, work=work, victoriametrics=vm, vmalert=vmalert,
                       vmalert_alerts=vmalert_alerts, incidents=record)


def _queue_ids(requests: list[dict], message_ids: list[str]) -> list[str]:
    """Queue ids the real ZoneMTA gave `message_ids`, from the QUEUED log records."""
    wanted = {m.strip("<>") for m in message_ids}
    found = []
    for req in requests:
        for rl in req.get("resourceLogs", []):
            for sl in rl.get("scopeLogs", []):
                for rec in sl.get("logRecords", []):
                    a = {kv["key"]: kv["value"].get("stringValue") for kv in rec.get("attributes", [])}
                    if a.get("mta.action") == "QUEUED" and (a.get("mta.message_id") or "").lower() in \
                            {w.lower() for w in wanted}:
                        found.append(a["mta.queue_id"])
    return sorted(set(found))


# every sidecar's last word, the same in both backends once both have it all
SETTLED = "sum by (instance) (otelmta_exporter_sent_metric_points_total)"


def _wait_for_same_totals(prom: Prometheus, vm: VictoriaMetrics, timeout: float = 30.0) -> None:
    """VictoriaMetrics has what Prometheus has (its exporter queues on disk and sends on its own time)."""
    deadline = time.monotonic() + timeout
    while True:
        p = {r["metric"].get("instance"): r["value"][1] for r in prom.query(SETTLED)}
        v = {r["metric"].get("instance"): r["value"][1] for r in vm.query(SETTLED)}
        if p and p == v:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"VictoriaMetrics did not catch up with Prometheus in {timeout}s: {p} != {v}")
        time.sleep(0.5)


# The last sample of each sidecar's export-backlog series (ExportBacklog's
# inputs): Prometheus' timestamp() of a selector is its sample's; MetricsQL's
# is the query's, hence tlast_over_time there.
BACKLOG_SERIES = ("otelmta_exporter_queue_size_bytes", "otelmta_exporter_queue_capacity_bytes",
                  "otelmta_exporter_spool_size_bytes")     # the spool's only where it is on
LAST_SAMPLE = {"prometheus": 'max by (instance) (timestamp({name}{{job="otel-mta"}}))',
               "victoriametrics": 'max by (instance) (tlast_over_time({name}{{job="otel-mta"}}[5m]))'}


def _wait_for_final_samples(prom: Prometheus, vm: VictoriaMetrics, since: float, instances: set,
                            timeout: float = 60.0) -> None:
    """Both backends hold what each sidecar exported as it stopped (after `since`).
    The Collector's remote-write WAL sends on its truncate_frequency (15 s), so
    Prometheus can be 20 s behind: evaluated before that, an alert rule still sees
    the backlog of an outage that is over (ExportBacklog pending on incident-0).
    Equal totals in both backends do not show it: both can be behind alike."""
    deadline = time.monotonic() + timeout
    while True:
        behind = {}
        for backend_name, backend in (("prometheus", prom), ("victoriametrics", vm)):
            for series in BACKLOG_SERIES:
                expr = LAST_SAMPLE[backend_name].format(name=series)
                last = {r["metric"].get("instance"): float(r["value"][1]) for r in backend.query(expr)}
                wanted = set(last) if series.endswith("spool_size_bytes") else instances
                late = {i: last.get(i) for i in wanted if last.get(i, 0.0) < since}
                if late:
                    behind[f"{backend_name} {series}"] = late
        if not behind:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the sidecars' last samples (after {since:.3f}) did not arrive in {timeout}s: {behind}")
        time.sleep(0.5)


def _wait_for_alerts(prom: Prometheus, vmalert: VMAlert, timeout: float) -> None:
    """The rule engines have seen the incidents' alerts (pending: the run is shorter than
    their `for:`). Returns after `timeout` without them: the tests say what is missing."""
    want = {name for name, _ in incidents.MUST_ALERT}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = {r["metric"]["alertname"] for r in prom.query('ALERTS{alertname=~"OtelMta.*"}')}
        v = {a["name"] for a in vmalert.alerts()}
        if want <= p and want <= v:
            return
        time.sleep(1)


def _wait_for_rules(prom: Prometheus, vmalert: VMAlert, after: float, timeout: float = 20.0) -> None:
    """Every rule group's last evaluation started after `after` (so it saw what
    the backends held then; recording rules have values)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        groups, vm_groups = prom.groups(), vmalert.groups()
        if all(_epoch(g.get("lastEvaluation")) > after for g in groups + vm_groups):
            return
        time.sleep(0.5)
    raise AssertionError(f"rule groups not evaluated within {timeout}s: {groups} {vm_groups}")


def _epoch(text: str | None) -> float:
    """An RFC 3339 time as Prometheus and vmalert write it (nanoseconds, Z; 3.11's
    fromisoformat takes both) -> epoch seconds; 0.0 for none."""
    return dt.datetime.fromisoformat(text).timestamp() if text else 0.0
