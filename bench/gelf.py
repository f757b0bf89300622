#!/usr/bin/env python3
"""GELF over UDP -> OTLP logs over gRPC to a receiver in another process.

Prints messages per CPU-second of the sidecar process (received, decoded,
mapped, encoded and exported; all threads) and loss, for small uncompressed
datagrams, WildDuck-shaped ones plain and zlib-compressed, and chunked ones
(npm `gelf` headers, 'wan' 1420-byte chunks, as ZoneMTA and WildDuck send);
then loss at a sustained rate (default 20,000/s for 60 s); and the Collector's
udplog receiver + json_parser on the same small datagrams in the same run, as
a baseline (bench/otelcol-udplog/build.sh builds that Collector from Go
modules on first use; --no-baseline skips it).

    python bench/gelf.py [--rate 60000] [--seconds 6] [--steady-rate 20000] [--steady-seconds 60]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from otlp_sink import Sink  # noqa: E402
from harness import CACHE, cpu_seconds, free_port, start_sidecar, wait_settled  # noqa: E402
from remote_log import send  # noqa: E402

ACTIONS = ["auth", "store", "fetch", "forward", "quota", "rcpt_to", "list", "select"]


def message(i: int, big: bool = False) -> dict:
    """A WildDuck-shaped GELF message (what its loggelf() sends)."""
    action = ACTIONS[i % len(ACTIONS)]
    msg = {"version": "1.1", "host": f"imap-{i % 4}", "short_message": f"WILDDUCK [{action.upper()}] user{i % 997}",
           "timestamp": time.time(), "facility": "wildduck", "_component": "wildduck", "_mail_action": action,
           "_user": f"65a0{i % 997:08x}beefcafe0000", "_sess": f"{i:016x}", "_ip": f"192.0.2.{i % 250}",
           "_mailbox": "5f1e2d3c4b5a69788796a5b4", "_message_id": f"<{i:x}.{i % 13}@sender.example>"}
    if big:
        msg["full_message"] = random.Random(i).randbytes(1500).hex()
    return msg


def small(i: int) -> dict:
    """A small GELF message, as a Graylog client library sends one log call."""
    return {"version": "1.1", "host": f"app-{i % 4}", "short_message": f"request {i} done in {i % 97} ms",
            "timestamp": time.time(), "level": 6, "_request_id": f"{i:08x}", "_status": 200}


def npm_chunks(payload: bytes, size: int, msg_id: int) -> list[bytes]:
    """Chunks as npm gelf 2.0.1 builds them (5-byte header, one-byte id)."""
    parts = [payload[i:i + size] for i in range(0, len(payload), size)]
    return [bytes([0x1E, 0x0F, msg_id & 0xFF, n, len(parts)]) + p for n, p in enumerate(parts)]


def workload(kind: str, n: int) -> tuple[list[bytes], int]:
    """(datagrams, messages)"""
    if kind == "small":
        return [json.dumps(small(i)).encode() for i in range(n)], n
    if kind == "plain":
        return [json.dumps(message(i)).encode() for i in range(n)], n
    if kind == "zlib":
        return [zlib.compress(json.dumps(message(i)).encode()) for i in range(n)], n
    datagrams = []
    for i in range(n):
        datagrams.extend(npm_chunks(zlib.compress(json.dumps(message(i, big=True)).encode()), 1420, i))
    return datagrams, n


def collector_binary() -> Path | None:
    """The bench-only Collector with the udplog receiver (bench/otelcol-udplog),
    built (and cached) on first use."""
    try:
        out = subprocess.run([str(ROOT / "bench" / "otelcol-udplog" / "build.sh")], capture_output=True, text=True,
                             timeout=1800)
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = out.stdout.strip()
    return Path(path) if out.returncode == 0 and path else None


def start_collector(binary: Path, port: int, sink_port: int) -> subprocess.Popen:
    env = {**os.environ, "GELF_UDP_ENDPOINT": f"127.0.0.1:{port}", "SINK_ENDPOINT": f"127.0.0.1:{sink_port}"}
    proc = subprocess.Popen([str(binary), "--config", str(ROOT / "bench" / "collector-udplog.yaml")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "Everything is ready" in line:
            break
    else:
        raise SystemExit("collector did not start")
    return proc


def run(program: str, datagrams: list[bytes], messages: int, rate: float, binary: Path | None = None) -> dict:
    sink_port, port = free_port(), free_port(socket.SOCK_DGRAM)
    sink = Sink(sink_port)
    proc = start_collector(binary, port, sink_port) if binary else start_sidecar(sink_port, {"OTEL_MTA_GELF_ENDPOINT": f"127.0.0.1:{port}"})
    ps = psutil.Process(proc.pid)
    time.sleep(0.5)
    cpu0, wall0 = cpu_seconds(ps), time.time()
    send(datagrams, port, rate)
    wait_settled(sink, messages)
    cpu, wall = cpu_seconds(ps) - cpu0, time.time() - wall0
    rss = ps.memory_info().rss
    proc.terminate()
    proc.wait(20)
    got = sink.logs
    sink.close()
    return {"program": program, "messages": messages, "datagrams": len(datagrams), "logs": got,
            "loss": 1 - got / messages, "cpu": cpu, "wall": wall, "per_cpu_s": got / cpu if cpu else 0.0,
            "rss_mib": rss / 2**20}


def row(r: dict) -> str:
    return (f"{r['program']:<44}{r['per_cpu_s']:>14,.0f}{r['loss']:>9.2%}{r['logs']:>10,}"
            f"{r['datagrams']:>11,}{r['cpu']:>8.2f}{r['rss_mib']:>9.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=60_000, help="offered datagrams per second (throughput runs)")
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--steady-rate", type=float, default=20_000)
    ap.add_argument("--steady-seconds", type=float, default=60)
    ap.add_argument("--no-baseline", action="store_true", help="skip the Collector udplog baseline")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    n = int(args.rate * args.seconds)
    tiny, _ = workload("small", n)
    plain, _ = workload("plain", n)
    print(f"workloads: {n:,} small GELF messages ({sum(map(len, tiny)) / n:.0f} B) and {n:,} WildDuck-shaped "
          f"ones ({sum(map(len, plain)) / n:.0f} B uncompressed); offered at {args.rate:,.0f} datagrams/s", flush=True)
    rows = [run("otel-mta: small, plain", tiny, n, args.rate), run("otel-mta: WildDuck-shaped, plain", plain, n, args.rate)]
    zl, _ = workload("zlib", n)
    rows.append(run("otel-mta: WildDuck-shaped, zlib", zl, n, args.rate))
    chunked, m = workload("chunked", n // 4)
    rows.append(run(f"otel-mta: WildDuck-shaped, chunked ({len(chunked) / m:.1f}/msg)", chunked, m, args.rate))
    binary = None if args.no_baseline else collector_binary()
    if binary:
        rows.append(run("otelcol udplog+json_parser: small", tiny, n, args.rate, binary))
    print(f"\n{'program':<44}{'messages/CPU-s':>14}{'loss':>9}{'logs':>10}{'datagrams':>11}{'CPU s':>8}{'RSS MiB':>9}")
    for r in rows:
        print(row(r))
    if binary:
        print(f"ratio otel-mta / otelcol udplog (small): {rows[0]['per_cpu_s'] / max(rows[-1]['per_cpu_s'], 1):.2f}x")
    else:
        print("(no baseline: bench/otelcol-udplog/build.sh did not give a Collector)")
    if args.steady_seconds > 0:
        total = int(args.steady_rate * args.steady_seconds)
        data, _ = workload("small", total)
        s = run("otel-mta: steady", data, total, args.steady_rate)
        print(f"\nsteady {args.steady_rate:,.0f} datagrams/s for {args.steady_seconds:.0f} s: {s['logs']:,}/{total:,} "
              f"log records (loss {s['loss']:.3%}), sidecar CPU {s['cpu'] / s['wall']:.0%} of a core, "
              f"RSS {s['rss_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
