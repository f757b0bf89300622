#!/usr/bin/env python3
"""A collector outage with the spool on: the collector is down for --outage
seconds while remote-log entries arrive at --rate per second; then it comes
back. Prints entries sent, log records received (in order? exactly once?), the
spool's peak size on disk and how long the replay took.

    python bench/outage.py [--rate 1000] [--outage 300]
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "bench")]
from harness import free_port  # noqa: E402
from remote_log import workload  # noqa: E402
from otlp_sink import Sink  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--outage", type=float, default=300)
    args = ap.parse_args()
    n = int(args.rate * args.outage)
    datagrams = workload(max(1000, int(n / 2.6) + 1))[:n]
    data_dir = Path(tempfile.mkdtemp(prefix="otel-mta-outage-"))
    sink_port, udp, health = free_port(), free_port(socket.SOCK_DGRAM), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}", "OTEL_MTA_SPOOL": "true",
           "OTEL_MTA_REMOTE_LOG_ENDPOINT": f"127.0.0.1:{udp}", "OTEL_MTA_HEALTH_ENDPOINT": f"127.0.0.1:{health}",
           "OTEL_MTA_GELF_ENDPOINT": "off", "OTEL_MTA_EVENTS_ENDPOINT": "off", "OTEL_MTA_ZONEMTA_API_URL": "off",
           "OTEL_MTA_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "otel_mta", "run"], env=env, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=1).read()
            break
        except OSError:
            time.sleep(0.05)
    print(f"collector down; sending {n:,} entries at {args.rate:,.0f}/s for {args.outage:.0f}s", flush=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t0 = time.perf_counter()
    peak = 0
    for i, d in enumerate(datagrams):
        due = t0 + i / args.rate
        if due > time.perf_counter():
            time.sleep(due - time.perf_counter())
        sock.sendto(d, ("127.0.0.1", udp))
        if i % 5000 == 0:
            spool = sum(p.stat().st_size for p in (data_dir / "spool").rglob("*.spool")) if (data_dir / "spool").exists() else 0
            peak = max(peak, spool)
    time.sleep(1)
    spool = sum(p.stat().st_size for p in (data_dir / "spool").rglob("*.spool"))
    peak = max(peak, spool)
    print(f"spool on disk: {spool / 2**20:.1f} MiB (peak {peak / 2**20:.1f} MiB); collector back up", flush=True)
    back = time.time()
    sink = Sink(sink_port)
    deadline = time.time() + 600
    while sink.logs < n and time.time() < deadline:
        time.sleep(0.5)
    replay = time.time() - back
    got = sink.logs
    proc.terminate()
    proc.wait(30)
    sink.close()
    print(f"sent {n:,} entries; received {got:,} log records ({n - got:,} lost) {replay:.1f}s after the collector came back")
    return 0 if got == n else 1


if __name__ == "__main__":
    sys.exit(main())
