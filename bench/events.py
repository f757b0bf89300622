#!/usr/bin/env python3
"""Plugin events -> sidecar (aiohttp, /v1/events) -> OTLP logs + spans + metrics
over gRPC to a receiver in another process (bench/otlp_sink.py).

The workload is what the ZoneMTA plugin sends with all its hooks on, for the
realistic traffic of tools/traffic.py: per message message.headers,
message.queue and the QUEUED log.entry; per delivery attempt its log.entry,
its delivery.phases (connect + smtp, with the plugin's attributes) and, when
final, queue.release. Batches of 500 events, JSON as JSON.stringify writes it,
gzip level 1 — as lib/reporter.js sends them — posted over keep-alive
connections by `--senders` clients (one per ZoneMTA process, one request in
flight each).

Prints events per CPU-second of the sidecar process (from the first request
until the sink has every log record), loss, spans, RSS.

    python bench/events.py [--messages 20000] [--senders 2] [--both-channels]
"""
from __future__ import annotations

import argparse
import gzip
import http.client
import sys
import threading
import time
from pathlib import Path

import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "bench")]
from harness import free_port, start_sidecar, wait_settled  # noqa: E402
from otlp_sink import Sink  # noqa: E402
from traffic import generate  # noqa: E402

SOURCE = {"service": "zonemta", "instance": "mta-0", "pid": 4711, "context": "sender", "plugin_version": "0.1.0"}
U = "__undefined__"


def plugin_events(messages: int) -> tuple[list[dict], int]:
    """The events the plugin would send for `messages` messages; and how many are log.entry."""
    out, n, logs = [], 0, 0
    now = int(time.time() * 1000)

    def add(type_, t, **fields):
        nonlocal n
        out.append({"id": f"Jf3kq0Zp9xYb.{n:x}", "type": type_, "time_ms": t, **fields})
        n += 1

    for e in generate(messages, start_ms=now):
        entry = {k: v for k, v in e.items() if v != U}     # JSON.stringify leaves undefined out
        t = now + n // 10
        qid, action = e["id"], e["action"]
        if action == "QUEUED":
            add("message.headers", t, queue_id=qid, message_id=e["message-id"])
            add("message.queue", t, queue_id=qid, message_id=e["message-id"], size=e["body"],
                recipients=len(e["to"].split(",")), interface="feeder")
        add("log.entry", t, entry=entry)
        logs += 1
        if action in ("ACCEPTED", "DEFERRED", "REJECTED"):
            start = t - e["timer"]
            connect = {"name": "connect", "start_ms": start + 3, "end_ms": start + e["start"] - 5,
                       "attributes": {"server.address": e["mx"], "server.port": 25, "network.peer.address": e["host"],
                                      "network.local.address": e["ip"], "mta.connect.tries": 1,
                                      "mta.connect.addresses": 1, "mta.connection.reused": False,
                                      "tls.established": True}}
            smtp = {"name": "smtp", "start_ms": start + e["start"] - 5, "end_ms": t,
                    "attributes": {"mta.smtp.envelope_ms": 12, "mta.smtp.data_ms": 40}}
            if action != "ACCEPTED":
                smtp["error"] = "EENVELOPE"
            add("delivery.phases", t, queue_id=qid, seq=e["seq"], action=action,
                defcount=e.get("defcount", 0) if action == "DEFERRED" else 0, attempt_start_ms=start,
                phases=[connect, smtp])
            if action != "DEFERRED":
                add("queue.release", t + 2, queue_id=qid, seq=e["seq"], zone=e["zone"],
                    status="delivered" if action == "ACCEPTED" else "rejected")
    return out, logs


def bodies(events: list[dict], batch: int = 500) -> list[bytes]:
    head = {"schema": "otel-mta.events/v1", "source": SOURCE}
    return [gzip.compress(orjson.dumps({**head, "events": events[i:i + batch]}), 1)
            for i in range(0, len(events), batch)]


def post_all(port: int, parts: list[list[bytes]]) -> list[int]:
    statuses: list[int] = []

    def sender(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for b in chunk:
            while True:
                conn.request("POST", "/v1/events", b, {"Content-Type": "application/json",
                                                          "Content-Encoding": "gzip"})
                r = conn.getresponse()
                r.read()
                statuses.append(r.status)
                if r.status != 503:
                    break
                time.sleep(0.2)
        conn.close()

    threads = [threading.Thread(target=sender, args=(c,)) for c in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def run(events: list[dict], logs: int, senders: int, both: bool) -> dict:
    parts_bodies = bodies(events)
    parts = [parts_bodies[i::senders] for i in range(senders)]
    sink_port, events_port = free_port(), free_port()
    sink = Sink(sink_port)
    proc = start_sidecar(sink_port, {
        "OTEL_MTA_EVENTS_ENDPOINT": f"127.0.0.1:{events_port}", "OTEL_MTA_HOST_METRICS": "off",
        "OTEL_MTA_REMOTE_LOG_ENDPOINT": f"127.0.0.1:{free_port()}" if both else "off"})
    ps = psutil.Process(proc.pid)
    time.sleep(0.5)
    t = ps.cpu_times()
    cpu0, wall0 = t.user + t.system, time.time()
    statuses = post_all(events_port, parts)
    wait_settled(sink, logs)
    t = ps.cpu_times()
    cpu, wall = t.user + t.system - cpu0, time.time() - wall0
    rss = ps.memory_info().rss
    proc.terminate()
    proc.wait(20)
    received, spans = sink.logs, sink.spans
    sink.close()
    return {"events": len(events), "logs": received, "spans": spans, "loss": 1 - received / logs,
            "cpu": cpu, "wall": wall, "per_cpu_s": len(events) / cpu if received == logs else 0.0,
            "rss_mib": rss / 2**20, "requests": len(statuses), "non_200": sum(1 for s in statuses if s != 200),
            "bytes": sum(map(len, parts_bodies))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--senders", type=int, default=2, help="concurrent clients (ZoneMTA processes)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--both-channels", action="store_true", help="also enable the remote log (de-duplication on)")
    args = ap.parse_args()
    events, logs = plugin_events(args.messages)
    kinds: dict = {}
    for e in events:
        kinds[e["type"]] = kinds.get(e["type"], 0) + 1
    print(f"workload: {len(events):,} events ({', '.join(f'{k} {v:,}' for k, v in kinds.items())}) "
          f"in {len(events) // 500 + 1} gzip batches of 500, {args.senders} senders", flush=True)
    rows = [run(events, logs, args.senders, args.both_channels) for _ in range(args.runs)]
    print(f"\n{'run':<5}{'events/CPU-s':>14}{'loss':>8}{'logs':>10}{'spans':>10}{'CPU s':>8}{'wall s':>8}"
          f"{'RSS MiB':>9}{'non-200':>9}")
    for i, r in enumerate(rows, 1):
        print(f"{i:<5}{r['per_cpu_s']:>14,.0f}{r['loss']:>8.2%}{r['logs']:>10,}{r['spans']:>10,}{r['cpu']:>8.2f}"
              f"{r['wall']:>8.2f}{r['rss_mib']:>9.1f}{r['non_200']:>9}")
    med = sorted(r["per_cpu_s"] for r in rows)[len(rows) // 2]
    print(f"median: {med:,.0f} events per CPU-second of the sidecar (target >= 50,000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
