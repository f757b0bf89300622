#!/usr/bin/env python3
"""The sidecar's memory: a sidecar runs beside every mail pod, so what it takes
while nothing happens matters as much as what it takes under load.

`otel-mta run` with its default sources (remote log, GELF, events endpoint,
ZoneMTA API poller, host poller; each on a free port here, as nothing else on
a shared machine may be disturbed), measured three ways:

  idle, no endpoint         the embedded OTLP JSON file sink
  idle, OTLP gRPC endpoint  exporting to a receiver in another process
  5,000 entries/s steady    remote-log traffic (tools/traffic.py), OTLP gRPC

RSS of the sidecar process, sampled every second: the largest sample and the
last. Targets (issue 15): idle <= 60 MiB, steady <= 100 MiB.

With --imports: the RSS after each module the sidecar imports in turn (a fresh
interpreter), i.e. where the idle memory goes.

    python bench/footprint.py [--idle-seconds 20] [--steady-seconds 30] [--imports]
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "bench")]
from harness import CACHE, free_port, wait_settled  # noqa: E402
from otlp_sink import Sink  # noqa: E402
from remote_log import send, workload  # noqa: E402

TARGET_IDLE_MIB, TARGET_STEADY_MIB = 60, 100
MIB = 2 ** 20


def start(env: dict) -> tuple[subprocess.Popen, int]:
    """`otel-mta run` with the default sources on free ports; (process, remote-log port)."""
    udp = free_port(socket.SOCK_DGRAM)
    gelf = free_port(socket.SOCK_DGRAM)
    health = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
           "OTEL_MTA_REMOTE_LOG_ENDPOINT": f"127.0.0.1:{udp}", "OTEL_MTA_GELF_ENDPOINT": f"127.0.0.1:{gelf}",
           "OTEL_MTA_EVENTS_ENDPOINT": f"127.0.0.1:{free_port()}",
           "OTEL_MTA_ZONEMTA_API_URL": f"http://127.0.0.1:{free_port()}",   # the default poller, nobody there
           "OTEL_MTA_HEALTH_ENDPOINT": f"127.0.0.1:{health}", "OTEL_MTA_DATA_DIR": str(CACHE / "footprint"),
           "PYTHONPATH": str(ROOT), **env}
    proc = subprocess.Popen([sys.executable, "-m", "otel_mta", "run"], env=env, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=1).read()
            return proc, udp
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the sidecar exited")
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the sidecar did not start")


class Sampler:
    """RSS of a process every `every` seconds, on a thread."""

    def __init__(self, pid: int, every: float = 1.0):
        self.ps = psutil.Process(pid)
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            self.samples.append(self.ps.memory_info().rss)
            self._stop.wait(every)

    def stop(self) -> tuple[float, float]:
        self._stop.set()
        self._thread.join()
        return max(self.samples) / MIB, self.samples[-1] / MIB


def idle(seconds: float, grpc: bool) -> tuple[float, float]:
    sink = Sink(free_port()) if grpc else None
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}"} if sink else {}
    proc, _ = start(env)
    sampler = Sampler(proc.pid)
    time.sleep(seconds)
    result = sampler.stop()
    proc.terminate()
    proc.wait(20)
    if sink:
        sink.close()
    return result


def steady(rate: float, seconds: float) -> tuple[float, float, int, int]:
    datagrams = workload(max(1000, int(rate * seconds / 2.8)))   # ~2.8 entries per message
    n = min(len(datagrams), int(rate * seconds))
    sink = Sink(free_port())
    proc, udp = start({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}"})
    sampler = Sampler(proc.pid)
    send(datagrams[:n], udp, rate)
    wait_settled(sink, n)
    rss_max, rss_last = sampler.stop()
    received = sink.logs
    proc.terminate()
    proc.wait(20)
    sink.close()
    return rss_max, rss_last, n, received


IMPORTS = """
import importlib, os, sys
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
last = rss()
print(f"  {'(interpreter)':58}{last:7.1f}")
for name in sys.argv[1:]:
    importlib.import_module(name)
    now = rss()
    print(f"  {name:58}{now:7.1f}{now - last:+7.1f}")
    last = now
"""
# in the order `otel-mta run` imports them (cli -> config -> app -> sources)
MODULES = ["otel_mta.cli", "otel_mta.config", "otel_mta.pipeline", "otel_mta.export.factory", "otel_mta.app",
           "otel_mta.sources.remote_log", "otel_mta.sources.events_http", "otel_mta.sources.gelf",
           "otel_mta.sources.zonemta_api", "otel_mta.sources.host"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--idle-seconds", type=float, default=20)
    ap.add_argument("--steady-rate", type=float, default=5_000)
    ap.add_argument("--steady-seconds", type=float, default=30)
    ap.add_argument("--imports", action="store_true", help="also: RSS after each module the sidecar imports")
    args = ap.parse_args()
    if args.imports:
        print("RSS (MiB) after each import, fresh interpreter:")
        subprocess.run([sys.executable, "-c", IMPORTS, *MODULES], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        print()
    rows = []
    for label, grpc in (("idle, no endpoint (file sink)", False), ("idle, OTLP gRPC endpoint", True)):
        rss_max, rss_last = idle(args.idle_seconds, grpc)
        rows.append((label, rss_max, rss_last, TARGET_IDLE_MIB))
    rss_max, rss_last, n, received = steady(args.steady_rate, args.steady_seconds)
    rows.append((f"{args.steady_rate:,.0f} remote-log entries/s, OTLP gRPC", rss_max, rss_last, TARGET_STEADY_MIB))
    print(f"otel-mta run, default sources; RSS in MiB (Python {sys.version.split()[0]})")
    print(f"{'':40}{'max':>8}{'last':>8}{'target':>8}")
    for label, mx, last, target in rows:
        print(f"{label:40}{mx:8.1f}{last:8.1f}{'<= ' + str(target):>8}  {'ok' if mx <= target else 'OVER'}")
    print(f"(steady: {n:,} entries sent, {received:,} log records received)")
    return 0 if all(mx <= target for _, mx, _, target in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
