"""What the benchmarks share: free ports, the sidecar started the way an
operator runs it (only the source under test on), CPU time, and waiting until
everything sent has arrived at the sink (bench/otlp_sink.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from tests.stack.proc import free_port  # noqa: F401 - one port picker for tests and benchmarks

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
_SOURCES_OFF = {"OTEL_MTA_REMOTE_LOG_ENDPOINT": "off", "OTEL_MTA_GELF_ENDPOINT": "off",
                "OTEL_MTA_EVENTS_ENDPOINT": "off", "OTEL_MTA_ZONEMTA_API_URL": "off"}


def start_sidecar(sink_port: int, env: dict) -> subprocess.Popen:
    """`otel-mta run` exporting to the sink over gRPC, every source off but
    those `env` turns on; returns once /readyz answers."""
    health = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}, **_SOURCES_OFF,
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
           "OTEL_MTA_HEALTH_ENDPOINT": f"127.0.0.1:{health}", "OTEL_MTA_DATA_DIR": str(CACHE / "data"), "PYTHONPATH": str(ROOT), **env}
    proc = subprocess.Popen([sys.executable, "-m", "otel_mta", "run"], env=env, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("sidecar did not start")


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def wait_settled(sink, expected: int, timeout: float = 120) -> None:
    """Until every log record arrived, or nothing new arrived for 3 s (what is
    missing then is lost)."""
    deadline = time.time() + timeout
    last, still = -1, 0
    while time.time() < deadline and sink.logs < expected:
        time.sleep(0.25)
        still = still + 1 if sink.logs == last else 0
        if still >= 12:
            return
        last = sink.logs
