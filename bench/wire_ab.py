#!/usr/bin/env python3
"""Two builds of the C record encoders (signals/_wire.c) on the same calls, in
one process: this tree's and another one's (e.g. main's, before a change).

Records every encode_log / encode_span call the pipeline makes for real
remote-log traffic (tools/traffic.py), checks both builds write the same
bytes where their features overlap, then times both alternately, by the
thread's CPU time, and prints the best of many rounds. Wall-clock timings
of separate runs drift by ±25 % on a shared machine; this does not.

    python bench/wire_ab.py OTHER/_wire.cpython-311-x86_64-linux-gnu.so [--messages 5000]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "bench")]
from remote_log import workload  # noqa: E402


def record_calls(messages: int) -> dict:
    from otel_mta import config
    from otel_mta.pipeline import Pipeline
    from otel_mta.signals import logs as L, traces as T
    from otel_mta.sources.remote_log import RemoteLogSource
    s = config.load(environ={"OTEL_MTA_DATA_DIR": "/nonexistent"})
    p = Pipeline(s, lambda *a: None)   # the default limits, as the sidecar runs
    src = RemoteLogSource(p, s.sources.remote_log)
    calls: dict = {"encode_log": [], "encode_span": []}
    log, span = L.encode_log, T.encode_span
    L.encode_log = lambda *a, **k: (calls["encode_log"].append((a, k)), log(*a, **k))[1]
    T.encode_span = lambda *a, **k: (calls["encode_span"].append((a, k)), span(*a, **k))[1]
    try:
        for d in workload(messages):
            src.handle_datagram(d)
        p.mail.tick(flush_all=True)
        p.flush()
    finally:
        L.encode_log, T.encode_span = log, span
    return calls


def cpu(fn, calls) -> float:
    t0 = time.thread_time()
    for a, k in calls:
        fn(*a, **k)
    return time.thread_time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("other", help="path of the other build's _wire extension module")
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--sample", type=int, default=3000, help="calls per timing")
    args = ap.parse_args()
    from otel_mta.signals import _wire as this
    spec = importlib.util.spec_from_file_location("other._wire", args.other)
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    calls = record_calls(args.messages)
    for name, cs in calls.items():
        same = sum(getattr(other, name)(*a, **k) == getattr(this, name)(*a, **k) for a, k in cs)
        print(f"{name}: {len(cs)} calls, same bytes in both builds: {same}")
    best = {}
    for r in range(args.rounds):
        order = (("other", other), ("this", this)) if r % 2 else (("this", this), ("other", other))
        for label, mod in order:
            for name, cs in calls.items():
                t = cpu(getattr(mod, name), cs[:args.sample]) / min(len(cs), args.sample)
                best[(label, name)] = min(best.get((label, name), t), t)
    print(f"\nbest of {args.rounds} rounds, us of CPU per call")
    for name in calls:
        o, t = best[("other", name)] * 1e6, best[("this", name)] * 1e6
        print(f"  {name:12} other {o:.3f}   this {t:.3f}   ({(t / o - 1) * 100:+.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
