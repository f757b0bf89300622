#!/usr/bin/env python3
"""Where a remote-log entry's CPU time goes, stage by stage.

Runs the sidecar's pipeline in this process over real msgpack-js datagrams
(tools/traffic.py), records the arguments of every call to each stage, then
times each stage again on exactly those calls. What the stages do not explain
is the mapping code itself (signals/mail.py, sources/remote_log.py). The
receive and export stages are timed separately: recvmmsg on a socket filled
beforehand, and grpc.aio requests of the pipeline's own payloads to a receiver
in another process. C and Python twins are both shown where there are two.

    python bench/remote_log_stages.py [--entries 50000]
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "bench")]
from harness import free_port  # noqa: E402
from remote_log import workload  # noqa: E402


class Recorder:
    """Wraps `obj.name` so that every call's arguments are kept."""

    def __init__(self):
        self.calls: dict[str, list] = {}

    def wrap(self, obj, name: str, label: str):
        fn = getattr(obj, name)
        calls = self.calls.setdefault(label, [])

        def recorded(*args, **kwargs):
            calls.append((args, kwargs))
            return fn(*args, **kwargs)

        setattr(obj, name, recorded)
        return fn


def best(fn, calls, repeat: int = 5, sample: int = 1000) -> float:
    """Seconds for all `calls`: the best of `repeat` replays of a sample of them,
    scaled. A replay of a few hundred calls runs from warm caches, as the stage
    does inside the pipeline; what cache misses cost falls to "mapping code"."""
    if not calls:
        return 0.0
    part = calls[:sample]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for args, kwargs in part:
            fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return min(times) * len(calls) / len(part)


def pipeline():
    from otel_mta import config
    from otel_mta.pipeline import Pipeline
    from otel_mta.sources.remote_log import RemoteLogSource
    payloads = []
    s = config.load(environ={"OTEL_MTA_DATA_DIR": "/nonexistent"})
    p = Pipeline(s, lambda signal, payload, n: payloads.append((signal, payload)))
    return p, RemoteLogSource(p, s.sources.remote_log), payloads


def stages(datagrams: list[bytes]) -> tuple[list, float]:
    from otel_mta import ids
    from otel_mta.signals import logs as L, traces as T, wire
    from otel_mta.sources import msgpack_js
    n = len(datagrams)
    # the whole pipeline, nothing recorded
    p, src, _ = pipeline()
    for d in datagrams[: n // 4]:
        src.handle_datagram(d)  # warm: caches, metric series
    t0 = time.perf_counter()
    for d in datagrams:
        src.handle_datagram(d)
    p.flush()
    total = time.perf_counter() - t0
    # again, recording what each stage is asked to do
    p, src, _ = pipeline()
    rec = Recorder()
    originals = {
        "decode (C)": rec.wrap(sys.modules["otel_mta.sources.remote_log"], "decode", "decode (C)"),
        "delivery attributes + log line (C)": rec.wrap(sys.modules["otel_mta.signals.mail"], "delivery_fields",
                                                       "delivery attributes + log line (C)"),
        "queue attributes + log line (C)": rec.wrap(sys.modules["otel_mta.signals.mail"], "queued_fields",
                                                    "queue attributes + log line (C)"),
        "attempt span id (sha256)": rec.wrap(ids, "attempt_span_id", "attempt span id (sha256)"),
        "histograms": rec.wrap(p.mail.m_duration, "record", "histograms"),
        "top-N domain": rec.wrap(p.mail, "top_domain", "top-N domain"),
        "log record + attributes (C)": rec.wrap(L, "encode_log", "log record + attributes (C)"),
        "span + attributes (C)": rec.wrap(T, "encode_span", "span + attributes (C)"),
        "batching": rec.wrap(p.logs, "add", "batching"),
    }
    size_record = rec.wrap(p.mail.m_size, "record", "histograms")
    rec.wrap(p.spans, "add", "batching")
    # the correlator and the tracker keep state: their calls are replayed in
    # order on fresh ones, so that their caches hit and miss as they did
    corr_calls = []
    for name in ("resolve", "learn", "root_span_id"):
        fn = getattr(p.mail.corr, name)
        setattr(p.mail.corr, name, (lambda fn, name: lambda *a: (corr_calls.append((name, a)), fn(*a))[1])(fn, name))
    tracker_calls = []
    for name in ("queued", "final", "deferred"):
        fn = getattr(p.tracker, name)
        setattr(p.tracker, name, (lambda fn, name: lambda *a: (tracker_calls.append((name, a)), fn(*a))[1])(fn, name))
    requests = []
    orig_request = wire.request
    sys.modules["otel_mta.signals.batch"].wire = type("W", (), {"request": staticmethod(
        lambda groups: (requests.append(([(r, s, list(recs)) for r, s, recs in groups],)), orig_request(groups))[1])})
    for d in datagrams:
        src.handle_datagram(d)
    p.flush()
    sys.modules["otel_mta.signals.batch"].wire = wire
    for module, name, label in ((sys.modules["otel_mta.sources.remote_log"], "decode", "decode (C)"),
                                (sys.modules["otel_mta.signals.mail"], "delivery_fields",
                                 "delivery attributes + log line (C)"),
                                (sys.modules["otel_mta.signals.mail"], "queued_fields",
                                 "queue attributes + log line (C)"),
                                (ids, "attempt_span_id", "attempt span id (sha256)"),
                                (L, "encode_log", "log record + attributes (C)"),
                                (T, "encode_span", "span + attributes (C)")):
        setattr(module, name, originals[label])
    # root spans are timed with the tracker below
    rec.calls["span + attributes (C)"] = [c for c in rec.calls["span + attributes (C)"]
                                          if c[0][3] not in ("message", "message.final")]
    # replay each stage on its recorded calls
    rows = []
    for label, fn in originals.items():
        calls = rec.calls.get(label, [])
        if label == "batching":
            from otel_mta.signals.batch import Batcher
            b = Batcher("logs", lambda *a: None, 10**9, 1 << 62)   # add() alone: never a flush
            fn = b.add
        elif label == "histograms":  # durations are recorded by (zone, outcome), sizes by (interface,)
            fn = (lambda value, resource, values=(), duration=fn: (
                duration if len(values) == 2 else size_record)(value, resource, values))
        rows.append((label, len(calls) / n, best(fn, calls) / n))
    from otel_mta.correlate import Correlator
    from otel_mta.signals.batch import Batcher
    from otel_mta import catalog
    from otel_mta.signals.metrics import MetricStore
    from otel_mta.signals.tracker import MessageTracker
    def replay_correlator():
        corr = Correlator(p.settings.correlation.index_size)
        for name, a in corr_calls:
            getattr(corr, name)(*a)
    rows.insert(1, ("trace context, ids, index (correlate.py)", len(corr_calls) / n,
                    best(replay_correlator, [((), {})], 3) / n))

    def replay_tracker():
        t = MessageTracker(Batcher("traces", lambda *a: None, 10**9), p.resources.zonemta,
                           metrics=MetricStore(catalog.load()), own_resource=p.resources.own)
        for name, args in tracker_calls:
            getattr(t, name)(*args)
    rows.append(("root spans (tracker.py, with their encoding)", len(tracker_calls) / n,
                 best(replay_tracker, [((), {})], 3) / n))
    rows.append(("export requests (C)", len(requests) / n, best(orig_request, [(r, {}) for r in requests]) / n))
    # Python twins, for comparison (not part of the total)
    from otel_mta.signals import fields
    twins = [("  decode, Python twin", msgpack_js.decode_py, rec.calls["decode (C)"]),
             ("  delivery attributes, Python twin", fields.delivery_fields_py,
              rec.calls["delivery attributes + log line (C)"]),
             ("  queue attributes, Python twin", fields.queued_fields_py, rec.calls["queue attributes + log line (C)"]),
             ("  log record, Python twin", L.encode_log_py, rec.calls["log record + attributes (C)"]),
             ("  span, Python twin", T.encode_span_py, rec.calls["span + attributes (C)"])]
    twin_rows = [(label, len(calls) / n, best(fn, calls, 2) / n) for label, fn, calls in twins]
    return rows, total / n, twin_rows


def receive_cost(datagrams: list[bytes]) -> list:
    from otel_mta.sources import udp
    out = []
    for label, reader in (("receive: recvmmsg (C; on the reading thread)", udp.recv_many),
                          ("  receive, recvfrom_into", None)):
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        r.bind(("127.0.0.1", 0))
        r.setblocking(False)
        w = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        buf = bytearray(65535)
        total, count = 0.0, 0
        for i in range(0, min(len(datagrams), 20000), 2000):
            for d in datagrams[i:i + 2000]:
                w.sendto(d, r.getsockname())
            t0 = time.process_time()
            if reader is not None:
                got = len(reader(r.fileno(), 100000))
            else:
                got = 0
                try:
                    while True:
                        n, _ = r.recvfrom_into(buf)
                        bytes(buf[:n])
                        got += 1
                except BlockingIOError:
                    pass
            total += time.process_time() - t0
            count += got
        out.append((label, 1.0, total / count))
        r.close()
        w.close()
    return out


def export_cost(datagrams: list[bytes]) -> list:
    import grpc
    from otel_mta.export.senders import GRPC_METHODS
    from otlp_sink import Sink
    p, src, payloads = pipeline()
    for d in datagrams:
        src.handle_datagram(d)
    p.flush()
    port = free_port()
    sink = Sink(port)

    async def send_all() -> float:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        calls = {s: channel.unary_unary(m) for s, m in GRPC_METHODS.items()}
        # warm-up (the first payload of each signal may come in any order: spans fill their batches first)
        await calls["logs"](next(payload for signal, payload in payloads if signal == "logs"), timeout=10)
        t0 = time.process_time()  # all threads: gRPC's own do part of the work
        for signal, payload in payloads:
            await calls[signal](payload, timeout=10)
        cpu = time.process_time() - t0
        await channel.close()
        return cpu

    try:
        cpu = asyncio.run(send_all())
    finally:
        sink.close()
    return [("export: OTLP/gRPC requests (grpc.aio)", len(payloads) / len(datagrams), cpu / len(datagrams))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=50_000)
    args = ap.parse_args()
    datagrams = workload(max(1000, int(args.entries / 2.6)))[: args.entries]
    rows, total, twins = stages(datagrams)
    explained = sum(us for _, _, us in rows)
    rows.append(("mapping code (mail.py, remote_log.py), cache misses", 1.0, total - explained))
    io = receive_cost(datagrams) + export_cost(datagrams)
    print(f"{len(datagrams):,} real remote-log entries, one process; microseconds of CPU per entry\n")
    print(f"{'stage':<52}{'calls/entry':>12}{'us/entry':>10}{'share':>8}")
    whole = total + io[0][2] + io[-1][2]
    for label, per, secs in [io[0]] + rows + [io[-1]]:
        print(f"{label:<52}{per:>12.2f}{secs * 1e6:>10.2f}{secs / whole:>8.0%}")
    print(f"{'total':<52}{'':>12}{whole * 1e6:>10.2f}   -> {1 / whole:,.0f} entries per CPU-second")
    print("\nfor comparison (not in the total):")
    for label, per, secs in twins + io[1:-1]:
        print(f"{label:<52}{per:>12.2f}{secs * 1e6:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
