#!/usr/bin/env python3
"""Remote log -> OTLP logs + spans + metrics over gRPC to a receiver in another
process; the sidecar side by side with a plain OpenTelemetry SDK program
(bench/sdk_baseline.py) in the same run.

Prints, for each: entries per CPU-second of the program, loss at the offered
rate; for the sidecar also RSS and entry-to-collector latency at 5,000/s with
default settings.

    python bench/remote_log.py [--rate 50000] [--seconds 8] [--steady-seconds 30]
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "bench")]
from otlp_sink import Sink  # noqa: E402
from traffic import encode, generate  # noqa: E402

CACHE = ROOT / ".cache" / "bench"


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workload(messages: int) -> list[bytes]:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"remote-log-{messages}.bin"
    if path.exists():
        data = path.read_bytes()
        out, pos = [], 0
        while pos < len(data):
            n = int.from_bytes(data[pos:pos + 4], "little")
            out.append(data[pos + 4:pos + 4 + n])
            pos += 4 + n
        return out
    datagrams = encode(generate(messages, start_ms=time.time() * 1000))
    path.write_bytes(b"".join(len(d).to_bytes(4, "little") + d for d in datagrams))
    return datagrams


def send(datagrams: list[bytes], port: int, rate: float) -> list[float]:
    """Send at `rate` per second in small bursts; returns each datagram's send time."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    times = []
    burst = max(1, int(rate / 1000))
    t0 = time.perf_counter()
    wall0 = time.time()
    for i in range(0, len(datagrams), burst):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        for d in datagrams[i:i + burst]:
            sock.sendto(d, ("127.0.0.1", port))
        times.extend([wall0 + (time.perf_counter() - t0)] * len(datagrams[i:i + burst]))
    return times


def wait_settled(sink: Sink, expected: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    last, still = -1, 0
    while time.time() < deadline and sink.logs < expected:
        time.sleep(0.25)
        still = still + 1 if sink.logs == last else 0
        if still >= 12:  # nothing new for 3 s: what is missing is lost
            return
        last = sink.logs


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def start_sidecar(udp: int, sink_port: int, extra_env: dict) -> tuple[subprocess.Popen, int]:
    health = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
           "OTEL_MTA_REMOTE_LOG_ENDPOINT": f"127.0.0.1:{udp}", "OTEL_MTA_HEALTH_ENDPOINT": f"127.0.0.1:{health}",
           "OTEL_MTA_GELF_ENDPOINT": "off", "OTEL_MTA_EVENTS_ENDPOINT": "off", "OTEL_MTA_ZONEMTA_API_URL": "off",
           "OTEL_MTA_DATA_DIR": str(CACHE / "data"), **extra_env}
    proc = subprocess.Popen([sys.executable, "-m", "otel_mta", "run"], env=env, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=1).read()
            return proc, health
        except OSError:
            time.sleep(0.05)
    raise SystemExit("sidecar did not start")


def start_baseline(udp: int, sink_port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sdk_baseline.py"), "--port", str(udp),
                             "--endpoint", f"http://127.0.0.1:{sink_port}"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "ready"
    return proc


def throughput(name: str, datagrams: list[bytes], rate: float) -> dict:
    sink_port, udp = free_port(), free_port(socket.SOCK_DGRAM)
    sink = Sink(sink_port)
    if name == "otel-mta":
        proc, _ = start_sidecar(udp, sink_port, {})
    else:
        proc = start_baseline(udp, sink_port)
    ps = psutil.Process(proc.pid)
    time.sleep(0.5)
    cpu0 = cpu_seconds(ps)
    wall0 = time.time()
    send(datagrams, udp, rate)
    wait_settled(sink, len(datagrams))
    cpu = cpu_seconds(ps) - cpu0
    wall = time.time() - wall0
    rss = ps.memory_info().rss
    proc.terminate()
    proc.wait(20)
    received = sink.logs
    spans = sink.spans
    sink.close()
    return {"name": name, "entries": len(datagrams), "logs": received, "spans": spans,
            "loss": 1 - received / len(datagrams), "cpu": cpu, "wall": wall,
            "per_cpu_s": received / cpu if cpu else 0.0, "rss_mib": rss / 2**20}


def steady(datagrams: list[bytes], rate: float, seconds: float) -> dict:
    sink_port, udp = free_port(), free_port(socket.SOCK_DGRAM)
    sink = Sink(sink_port, track_latency=True)
    proc, _ = start_sidecar(udp, sink_port, {})  # default delays: what an operator runs
    ps = psutil.Process(proc.pid)
    n = min(len(datagrams), int(rate * seconds))
    rss = []
    import threading
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            rss.append(ps.memory_info().rss)
            stop.wait(1.0)

    t = threading.Thread(target=sample)
    t.start()
    sent_at = send(datagrams[:n], udp, rate)
    wait_settled(sink, n)
    stop.set()
    t.join()
    proc.terminate()
    proc.wait(20)
    arrivals = sink.close()
    # match arrivals to send times by (queue id, action, seq)
    from otel_mta.sources.msgpack_js import decode
    index = {}
    for i, d in enumerate(datagrams[:n]):
        e = decode(d)
        index[(e["id"], e["action"], e.get("seq"))] = sent_at[i]
    lat = sorted(arr - index[k] for k, arr in arrivals if k in index)
    return {"entries": n, "received": len(arrivals), "rss_max_mib": max(rss) / 2**20,
            "rss_last_mib": rss[-1] / 2**20, "p50_ms": 1000 * lat[len(lat) // 2],
            "p99_ms": 1000 * lat[int(len(lat) * 0.99)], "max_ms": 1000 * lat[-1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50_000, help="offered entries per second")
    ap.add_argument("--seconds", type=float, default=8, help="length of the throughput run")
    ap.add_argument("--steady-rate", type=float, default=5_000)
    ap.add_argument("--steady-seconds", type=float, default=30)
    args = ap.parse_args()
    total = int(args.rate * args.seconds)
    datagrams = workload(max(1000, int(total / 2.6)))[:total]
    print(f"workload: {len(datagrams)} real msgpack-js datagrams "
          f"(avg {statistics.mean(map(len, datagrams)):.0f} B), offered at {args.rate:,.0f}/s", flush=True)
    rows = [throughput("otel-mta", datagrams, args.rate), throughput("otel-sdk baseline", datagrams, args.rate)]
    print(f"\n{'program':<20}{'entries/CPU-s':>15}{'loss':>9}{'logs':>10}{'spans':>9}{'CPU s':>8}{'RSS MiB':>9}")
    for r in rows:
        print(f"{r['name']:<20}{r['per_cpu_s']:>15,.0f}{r['loss']:>9.2%}{r['logs']:>10,}{r['spans']:>9,}"
              f"{r['cpu']:>8.2f}{r['rss_mib']:>9.1f}")
    print(f"ratio otel-mta / baseline: {rows[0]['per_cpu_s'] / max(rows[1]['per_cpu_s'], 1):.2f}x")
    if args.steady_seconds > 0:
        steady_data = workload(max(1000, int(args.steady_rate * args.steady_seconds / 2.6) + 1))
        s = steady(steady_data, args.steady_rate, args.steady_seconds)
        print(f"\nsteady {args.steady_rate:,.0f}/s for {args.steady_seconds:.0f}s, default settings: "
              f"RSS max {s['rss_max_mib']:.1f} MiB (last {s['rss_last_mib']:.1f}); entry-to-collector latency "
              f"p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms, max {s['max_ms']:.0f} ms; "
              f"{s['received']}/{s['entries']} log records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
