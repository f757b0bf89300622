"""The gateway exactly as the chart deploys it, taken out of `helm template`.

    docs = render_chart(helm, values_files=[PROFILES / "victoria-jaeger.yaml"],
                        values={"gateway.backends.jaeger.endpoint": '"127.0.0.1:4317"'})
    gw = RenderedGateway.from_manifests(docs, tmp_path / "conf")
    gw.validate(otelcol_bin)                      # `otelcol validate`, same files, args, env
    gw.effective_config(otelcol_bin)              # `otelcol print-config`: the merged config
    col = gw.start(otelcol_bin, tmp_path / "run", secrets={...})   # a running Collector

The ConfigMap's files are written to disk and the Deployment's own `--config`
arguments and literal environment are used, so what runs here is what a pod
would run. Values from Secrets (secretKeyRef) are given by the test.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.collector.otelcol_harness import Collector, start_collector
from tests.stack.proc import free_port

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "otel-mta"
PROFILES = CHART / "profiles"
KUBE_VERSION = "1.34.0"
GATEWAY = "rel-otel-mta-gateway"


def helm_bin() -> str:
    if os.environ.get("HELM_BIN"):
        return os.environ["HELM_BIN"]
    res = subprocess.run([str(ROOT / "helm" / "install-helm.sh")], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError("helm/install-helm.sh failed:\n" + res.stderr[-4000:])
    return res.stdout.strip().splitlines()[-1]


def render_chart(helm: str, values: dict[str, str] | None = None, values_files=(),
                 check: bool = True, chart: Path = CHART):
    """`helm template` -> the manifests; values use --set-json syntax (the value is JSON)."""
    args = [helm, "template", "rel", str(chart), "--namespace", "mail", "--kube-version", KUBE_VERSION]
    for f in values_files:
        args += ["-f", str(f)]
    for k, v in (values or {}).items():
        args += ["--set-json", f"{k}={v}"]
    res = subprocess.run(args, capture_output=True, text=True)
    if not check:
        return res
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


@dataclass
class RenderedGateway:
    conf_dir: Path
    args: list[str]                 # the container's --config arguments, pointing into conf_dir
    env: dict[str, str]             # its literal environment
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)   # name -> (secret, key)
    files: dict[str, str] = field(default_factory=dict)                     # the ConfigMap's data
    last_metrics_port: int = 0      # where the last start()ed Collector serves its own metrics

    @classmethod
    def from_manifests(cls, docs: list[dict], conf_dir: Path, name: str = GATEWAY) -> "RenderedGateway":
        dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
        pod = dep["spec"]["template"]["spec"]
        cm_name = next(v["configMap"]["name"] for v in pod["volumes"] if v["name"] == "config")
        cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name)
        conf_dir.mkdir(parents=True, exist_ok=True)
        for fname, text in cm["data"].items():
            (conf_dir / fname).write_text(text)
        (c,) = pod["containers"]
        args = [a.replace("/conf/", f"{conf_dir}/") for a in c["args"]]
        env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
        secret_env = {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                      for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        return cls(conf_dir, args, env, secret_env, dict(cm["data"]))

    def _env(self, secrets: dict | None, overrides: dict | None = None) -> dict:
        env = {"PATH": "/usr/bin:/bin", **self.env}
        for var, ref in self.secret_env.items():
            if secrets and ref in secrets:
                env[var] = secrets[ref]
        return {**env, **(overrides or {})}

    def validate(self, otelcol_bin: Path, secrets: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(otelcol_bin), "validate", *self.args], capture_output=True, text=True,
                              env=self._env(secrets), timeout=60)

    def effective_config(self, otelcol_bin: Path, secrets: dict | None = None) -> dict:
        """The configuration the Collector would run: every file merged, variables expanded."""
        res = subprocess.run([str(otelcol_bin), "print-config", "--mode=unredacted", *self.args],
                             capture_output=True, text=True, env=self._env(secrets), timeout=60)
        assert res.returncode == 0, res.stderr
        return yaml.safe_load(res.stdout)

    def start(self, otelcol_bin: Path, work: Path, secrets: dict | None = None,
              replacing: Collector | None = None) -> Collector:
        """Run it on free loopback ports with its queues under `work/data` (start_collector
        sets OTELCOL_OTLP_*_ENDPOINT and OTELCOL_HEALTH_ENDPOINT; its own metrics on a free
        port). `replacing`: a stopped Collector whose ports (and metrics port) it takes over."""
        work.mkdir(parents=True, exist_ok=True)
        ports = (replacing.grpc_port, replacing.http_port) if replacing else None
        if not replacing:
            self.last_metrics_port = free_port()
        env = self._env(secrets, {"OTELCOL_DATA_DIR": str(work / "data"),
                                  "OTELCOL_METRICS_PORT": str(self.last_metrics_port)})
        env.pop("PATH")
        configs = [Path(a.split("=", 1)[1]) for a in self.args]
        return start_collector(otelcol_bin, work, configs, env=env, ports=ports)
