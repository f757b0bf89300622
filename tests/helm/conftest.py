"""Fixtures for the chart tests: the real Helm CLI (helm/install-helm.sh) and a renderer."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "otel-mta"
KUBE_VERSION = "1.34.0"

# The Collector fixtures (built binary) live with the collector tests.
sys.path.insert(0, str(ROOT / "tests" / "collector"))


@pytest.fixture(scope="session")
def helm() -> str:
    if os.environ.get("HELM_BIN"):
        return os.environ["HELM_BIN"]
    res = subprocess.run([str(ROOT / "helm" / "install-helm.sh")], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError("helm/install-helm.sh failed:\n" + res.stderr[-4000:])
    return res.stdout.strip().splitlines()[-1]


def set_args(values: dict[str, str] | None) -> list[str]:
    args = []
    for k, v in (values or {}).items():
        args += ["--set-json", f"{k}={v}"]
    return args


@pytest.fixture(scope="session")
def render(helm):
    """render({"gateway.replicas": "3"}) -> list of manifests; raises on helm errors."""
    def _render(values: dict[str, str] | None = None, check: bool = True) -> list[dict] | subprocess.CompletedProcess:
        args = [helm, "template", "rel", str(CHART), "--namespace", "mail", "--kube-version", KUBE_VERSION]
        res = subprocess.run(args + set_args(values), capture_output=True, text=True)
        if not check:
            return res
        assert res.returncode == 0, res.stderr
        return [d for d in yaml.safe_load_all(res.stdout) if d]
    return _render
