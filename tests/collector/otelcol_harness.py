"""Run the real otel-mta Collector (built by collector-config/build.sh) in tests.

Used by tests/collector/conftest.py's fixtures and by tests/helm.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.stack.proc import free_port, port_open

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "collector-config"
OVERLAY_DIR = Path(__file__).resolve().parent / "overlays"


def build_collector() -> Path:
    if os.environ.get("OTELCOL_BIN"):
        return Path(os.environ["OTELCOL_BIN"]).resolve()
    res = subprocess.run([str(CONFIG_DIR / "build.sh")], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"collector-config/build.sh failed:\n{res.stderr[-4000:]}")
    return Path(res.stdout.strip().splitlines()[-1])


def config_path(name: str | Path) -> Path:
    """A bare name is looked up in collector-config/, then in overlays/."""
    p = Path(name)
    if p.is_absolute():
        return p
    for base in (CONFIG_DIR, OVERLAY_DIR):
        if (base / p).exists():
            return base / p
    raise FileNotFoundError(name)


@dataclass
class Collector:
    proc: subprocess.Popen
    grpc_port: int
    http_port: int
    output_dir: Path
    log_path: Path

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self, signal_name: str) -> list[dict]:
        """All OTLP JSON requests the file exporter wrote for one signal."""
        path = self.output_dir / f"{signal_name}.jsonl"
        if not path.exists():
            return []
        text = path.read_text()
        # The exporter flushes its buffer mid-line: parse complete lines only.
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def wait_for(self, predicate, timeout: float = 15.0, what: str = "output"):
        """Poll until predicate(self) is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate(self)
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"collector exited ({self.proc.returncode}) waiting for {what}:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{self.log()[-4000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _wait_listening(col: Collector, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if col.proc.poll() is not None:
            raise RuntimeError(f"collector exited with {col.proc.returncode}:\n{col.log()[-4000:]}")
        if port_open(col.grpc_port) and port_open(col.http_port):
            return
        time.sleep(0.1)
    col.stop()
    raise RuntimeError(f"collector did not listen within {timeout}s:\n{col.log()[-4000:]}")


def start_collector(bin_path: Path, work: Path, configs, env: dict | None = None,
                    sets: list[str] | None = None, ports: tuple[int, int] | None = None) -> Collector:
    """Start the Collector with `configs` (merged left to right) on free loopback ports
    (or on `ports`, (grpc, http), e.g. those of a Collector it replaces)."""
    work.mkdir(parents=True, exist_ok=True)
    grpc_port, http_port = ports or (free_port(), free_port())
    full_env = {
        **os.environ,
        "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
        "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{http_port}",
        "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{free_port()}",
        "OTELCOL_OUTPUT_DIR": str(work / "out"),
        "OTELCOL_DATA_DIR": str(work / "data"),
        **(env or {}),
    }
    args = [str(bin_path)]
    args += [f"--config={config_path(c)}" for c in configs]
    args += [f"--set={s}" for s in sets or ()]
    log_path = work / "collector.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    col = Collector(proc, grpc_port, http_port, work / "out", log_path)
    _wait_listening(col)
    return col


