"""The real metric, log and trace backends, built from Go modules by
tools/backends.sh and run on free loopback ports with temp dirs.

    prom = Prometheus(tmp_path)            # remote write + OTLP receiver on
    prom.query("up")                       # -> the `data.result` list
    prom.stop()

Each class starts its process in __init__, waits until it answers, and stops
it (its whole process group) in stop(). A missing binary is built first (the
build is cached in .cache/backends/).
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.stack.proc import Process, free_port

ROOT = Path(__file__).resolve().parents[2]


def backend_bin(name: str) -> Path:
    """Path of a backend binary, built by tools/backends.sh when not cached."""
    res = subprocess.run([str(ROOT / "tools" / "backends.sh"), name], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"tools/backends.sh {name} failed:\n{res.stderr[-4000:]}")
    return Path(res.stdout.strip().splitlines()[-1])


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def http_get_json(url: str, timeout: float = 10.0):
    status, body = http_get(url, timeout)
    if status != 200:
        raise AssertionError(f"GET {url} -> {status}: {body[:2000]!r}")
    return json.loads(body)


class _Backend:
    name = ""

    def __init__(self, work: Path):
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: Process | None = None

    def _start(self, argv: list, ready_path: str, timeout: float = 60.0) -> None:
        self.proc = Process(self.name, argv, self.work / f"{self.name}.log", cwd=self.work)
        self.proc.wait_until(lambda: http_get(self.base + ready_path, 1.0)[0] == 200, timeout,
                             f"an answer on {ready_path}")

    def log_text(self) -> str:
        return self.proc.log_text() if self.proc else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class _PromQL(_Backend):
    """A backend that answers the Prometheus query API."""

    def query(self, expr: str, time_s: float | None = None) -> list:
        params = {"query": expr}
        if time_s is not None:
            params["time"] = f"{time_s:.3f}"
        doc = http_get_json(f"{self.base}/api/v1/query?{urllib.parse.urlencode(params)}")
        if doc.get("status") != "success":
            raise AssertionError(f"{self.name}: query {expr!r} failed: {doc}")
        return doc["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list:
        """Range query: [{"metric": ..., "values": [[t, "v"], ...]}, ...]."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
        doc = http_get_json(f"{self.base}/api/v1/query_range?{urllib.parse.urlencode(params)}")
        if doc.get("status") != "success":
            raise AssertionError(f"{self.name}: range query {expr!r} failed: {doc}")
        return doc["data"]["result"]

    def series_names(self) -> set[str]:
        doc = http_get_json(f"{self.base}/api/v1/label/__name__/values")
        return set(doc["data"])

    def wait_for(self, expr: str, timeout: float = 30.0) -> list:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no data for {expr!r} within {timeout}s")
            time.sleep(0.5)


class Prometheus(_PromQL):
    """Prometheus 3 with its remote-write receiver (`remote_write_url`) and its
    OTLP receiver (`otlp_url`, the base for an OTLP/HTTP exporter)."""

    name = "prometheus"

    def __init__(self, work: Path, rule_files: list | None = None, evaluation_interval: str = "15s",
                 extra_args: list | None = None):
        super().__init__(work)
        config = self.work / "prometheus.yml"
        doc = {"global": {"scrape_interval": "15s", "evaluation_interval": evaluation_interval},
               "rule_files": [str(Path(f).resolve()) for f in rule_files or ()]}
        config.write_text(json.dumps(doc))   # JSON is YAML
        self._start([backend_bin("prometheus"), f"--config.file={config}",
                     f"--storage.tsdb.path={self.work / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}",
                     "--web.enable-remote-write-receiver", "--web.enable-otlp-receiver",
                     "--storage.tsdb.retention.time=1d", *(extra_args or [])], "/-/ready")
        self.remote_write_url = f"{self.base}/api/v1/write"
        self.otlp_url = f"{self.base}/api/v1/otlp"

    def groups(self) -> list[dict]:
        """The rule groups, each with its rules, health and lastEvaluation."""
        return http_get_json(f"{self.base}/api/v1/rules")["data"]["groups"]


class VictoriaMetrics(_PromQL):
    """VictoriaMetrics single node; OTLP metrics at `otlp_url` + /v1/metrics."""

    name = "victoria-metrics"

    def __init__(self, work: Path, extra_args: list | None = None):
        super().__init__(work)
        self._start([backend_bin("victoria-metrics"), f"-storageDataPath={self.work / 'data'}",
                     f"-httpListenAddr=127.0.0.1:{self.port}", "-search.latencyOffset=0s",
                     "-loggerLevel=WARN", *(extra_args or [])], "/health")
        self.otlp_url = f"{self.base}/opentelemetry"


class VMAlert(_Backend):
    """vmalert: evaluates Prometheus rule files against a VictoriaMetrics and
    writes recording rules' results and the ALERTS series back to it, as
    VictoriaMetrics users run alerting rules (there is no rule engine in
    VictoriaMetrics itself). Notifications go nowhere (-notifier.blackhole)."""

    name = "vmalert"

    def __init__(self, work: Path, rule_files: list, vm_base: str, evaluation_interval: str = "15s"):
        super().__init__(work)
        self._start([backend_bin("vmalert"), *(f"-rule={Path(f).resolve()}" for f in rule_files),
                     f"-datasource.url={vm_base}", f"-remoteWrite.url={vm_base}",
                     f"-evaluationInterval={evaluation_interval}",
                     "-rule.evalDelay=0s",              # VictoriaMetrics runs with -search.latencyOffset=0s
                     "-remoteWrite.flushInterval=1s", "-notifier.blackhole",
                     f"-httpListenAddr=127.0.0.1:{self.port}", "-loggerLevel=WARN"], "/health")

    def alerts(self) -> list[dict]:
        """Active alerts: {"name", "state" (pending|firing), "labels", "value", ...}."""
        return http_get_json(f"{self.base}/api/v1/alerts")["data"]["alerts"]

    def groups(self) -> list[dict]:
        return http_get_json(f"{self.base}/api/v1/rules")["data"]["groups"]


class VictoriaLogs(_Backend):
    """VictoriaLogs; OTLP logs at `otlp_url` + /v1/logs; LogsQL through query()."""

    name = "victoria-logs"

    def __init__(self, work: Path):
        super().__init__(work)
        self._start([backend_bin("victoria-logs"), f"-storageDataPath={self.work / 'data'}",
                     f"-httpListenAddr=127.0.0.1:{self.port}", "-loggerLevel=WARN"], "/health")
        self.otlp_url = f"{self.base}/insert/opentelemetry"

    def query(self, logsql: str, limit: int = 1000) -> list[dict]:
        """Rows (one JSON object each) matching a LogsQL query."""
        params = urllib.parse.urlencode({"query": logsql, "limit": limit})
        status, body = http_get(f"{self.base}/select/logsql/query?{params}")
        if status != 200:
            raise AssertionError(f"victoria-logs: {logsql!r} -> {status}: {body[:2000]!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]


class Jaeger(_Backend):
    """Jaeger v2 (all in one); OTLP gRPC at `otlp_grpc_endpoint`, its query API at `base`.

    Traces are kept in memory, or with `persistent=True` in Badger on disk
    under `work`, so they survive stop() and start() (an outage test restarts
    it on the same ports)."""

    name = "jaeger"

    def __init__(self, work: Path, grpc_port: int | None = None, persistent: bool = False):
        super().__init__(work)
        self.grpc_port = grpc_port or free_port()
        self.otlp_grpc_endpoint = f"127.0.0.1:{self.grpc_port}"
        if persistent:
            data = self.work / "badger"
            storage = JAEGER_BADGER.format(keys=data / "keys", values=data / "values")
        else:
            storage = JAEGER_MEMORY
        self.config = self.work / "jaeger.yaml"
        self.config.write_text(JAEGER_CONFIG.format(grpc=self.grpc_port, query=self.port, health=free_port(),
                                                    query_grpc=free_port(), storage=storage))
        self.start()

    def start(self) -> None:
        self._start([backend_bin("jaeger"), f"--config={self.config}"], "/api/services")

    def trace(self, trace_id_hex: str) -> dict | None:
        """The trace in Jaeger's JSON (`spans`, `processes`), or None when it has none."""
        status, body = http_get(f"{self.base}/api/traces/{trace_id_hex}")
        if status == 404:
            return None
        if status != 200:
            raise AssertionError(f"jaeger: trace {trace_id_hex} -> {status}: {body[:2000]!r}")
        data = json.loads(body).get("data") or []
        return data[0] if data else None

    def services(self) -> list[str]:
        return http_get_json(f"{self.base}/api/services").get("data") or []


# Jaeger v2's all-in-one config, with every port ours (its defaults are 4317/4318/16686/...)
# and its own telemetry off (it would bind 8888). Checked against cmd/jaeger/config*.yaml
# of the module tools/backends.sh builds.
JAEGER_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}
  jaeger_query:
    # on by default in Jaeger v2: it would send Jaeger's own traces to localhost:4317
    enable_tracing: false
    storage:
      traces: store
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      store:
{storage}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: store
"""
JAEGER_MEMORY = """\
        memory:
          max_traces: 100000"""
JAEGER_BADGER = """\
        badger:
          directories:
            keys: {keys}
            values: {values}
          ephemeral: false
          ttl:
            spans: 24h"""
