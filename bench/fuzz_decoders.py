#!/usr/bin/env python3
"""Mutation fuzzing of the sidecar's decoders with hostile input.

- msgpack-js (ZoneMTA's remote log): real datagrams of the traffic generator,
  mutated; the C decoder and the Python decoder must agree on every input
  (same value, or the same refusal reason), and neither may crash.
- GELF: real datagrams (plain, zlib, gzip, spec and npm-gelf chunks, TCP
  frames) mutated and fed to the GELF source's entry points: no exception may
  escape, and the pending chunk memory must stay under its caps throughout.

    python bench/fuzz_decoders.py --inputs 1000000 [--seed 1] [--only gelf|msgpack]

Prints inputs per second and the refusal reasons seen; exits 1 on the first
disagreement or escaped exception (with the input, base64, to reproduce it).
"""
from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import random
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x1e\x0f", b"\x78\x9c", b"\x1f\x8b", b"{", b"}", b"[", b"]",
               b'"', b"\\", b"\xc0", b"\xdc\xff\xff", b"\xde\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xed\xa0\x80",
               b'"_id":1,', b'"level":99,', b'"timestamp":1e308,', b'"_x":' + b"[" * 40, b"\x00" * 8]


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        op = rng.randrange(9)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:                 # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:               # random byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:                     # insert something interesting
            b[pos:pos] = rng.choice(INTERESTING)
        elif op == 3 and b:               # delete a range
            del b[pos:pos + rng.randrange(1, 16)]
        elif op == 4:                     # truncate
            del b[pos:]
        elif op == 5 and b:               # duplicate a range
            j = rng.randrange(len(b))
            b[pos:pos] = b[j:j + rng.randrange(1, 64)]
        elif op == 6:                     # splice with another corpus entry
            other = rng.choice(corpus)
            b = b[:pos] + other[rng.randrange(len(other) + 1):]
        elif op == 7 and len(b) > 4:      # set a length-ish byte to an extreme
            b[rng.randrange(min(len(b), 16))] = rng.choice((0, 1, 127, 128, 129, 200, 255))
        else:                             # random bytes
            b[pos:pos] = os.urandom(rng.randrange(1, 32))
    return bytes(b[:70000])


# -- msgpack-js ------------------------------------------------------------------------
def fuzz_msgpack(n: int, rng: random.Random) -> dict:
    from otel_mta.sources import msgpack_js
    from otel_mta.sources.msgpack_js import DecodeError, decode_py
    from traffic import encode, generate
    if msgpack_js.decode is decode_py:
        raise SystemExit("the C decoder is not built (make setup): nothing to compare with")
    corpus = encode(generate(200, start_ms=time.time() * 1000))
    reasons: Counter = Counter()
    for i in range(n):
        data = mutate(rng, rng.choice(corpus), corpus)
        out = []
        for fn in (msgpack_js.decode, decode_py):
            try:
                out.append(("ok", fn(data)))
            except DecodeError as err:
                out.append(("refused", err.reason))
            except Exception as err:  # noqa: BLE001 - that is what we look for
                fail(f"msgpack-js {fn.__name__} raised {err!r}", data)
        if out[0] != out[1] and not _same(out[0], out[1]):
            fail(f"C and Python decoders disagree: {out[0]!r:.200} vs {out[1]!r:.200}", data)
        reasons[out[0][1] if out[0][0] == "refused" else "decoded"] += 1
    return dict(reasons)


def _same(a, b) -> bool:
    """Equal, with NaN equal to NaN (a float64 NaN decodes to NaN in both)."""
    if a[0] != b[0]:
        return False
    return json.dumps(a[1], sort_keys=True, default=repr) == json.dumps(b[1], sort_keys=True, default=repr)


# -- GELF -------------------------------------------------------------------------------
def gelf_corpus(rng: random.Random) -> list[bytes]:
    msgs = [
        {"version": "1.1", "host": "imap-1", "short_message": "WILDDUCK [FRWRDOK] Scheduled forwarding",
         "facility": "wildduck", "_component": "wildduck", "_mail_action": "forward", "_user": "65a0beef",
         "_sender": "a@b.example", "_recipient": "c@d.example", "_message_id": "<x@y.example>",
         "_target_queue_id": "18f0001", "_target_address": "e@f.example\ng@h.example"},
        {"short_message": "MTA [MX_CONNECT_FAILED] Could not connect to MX", "facility": "mta", "host": "mta-1",
         "timestamp": 1700000000.5, "_component": "mta", "_delivery_id": "18f2a", "_delivery_seq": "001",
         "_failure_msg": "ECONNREFUSED", "_stack": "Error\n at x"},
        {"version": "1.1", "host": "h", "short_message": "s", "full_message": "f" * 300, "level": 3,
         "_obj": {"a": [1, {"b": None}]}, "_f": 1.5, "_b": True, "_id": "x", "line": "12", "file": "a.py"},
    ]
    raw = [json.dumps(m).encode() for m in msgs]
    corpus = raw + [zlib.compress(r) for r in raw] + [gzip.compress(r) for r in raw]
    big = zlib.compress(json.dumps({**msgs[0], "full_message": os.urandom(3000).hex()}).encode())
    spec_id = os.urandom(8)
    parts = [big[i:i + 1000] for i in range(0, len(big), 1000)]
    corpus += [b"\x1e\x0f" + spec_id + bytes([i, len(parts)]) + p for i, p in enumerate(parts)]
    corpus += [bytes([0x1E, 0x0F, 42, i, len(parts)]) + p for i, p in enumerate(parts)]
    return corpus


def fuzz_gelf(n: int, rng: random.Random) -> dict:
    import asyncio

    from otel_mta import config
    from otel_mta.pipeline import Pipeline
    from otel_mta.sources.gelf import GelfSource

    settings = config.load(environ={"OTEL_MTA_DATA_DIR": "/nonexistent"})
    records = [0]

    def submit(signal, payload, count):
        records[0] += count

    pipeline = Pipeline(settings, submit)
    src = GelfSource(pipeline, settings.sources.gelf)
    chunks = src.chunks
    chunks.max_sets, chunks.max_bytes = 200, 1 << 20   # small caps, so the fuzzer reaches them
    corpus = gelf_corpus(rng)
    peers = [("10.0.0.%d" % i, 1000 + i) for i in range(8)]
    loop = asyncio.new_event_loop()   # the mapping code may touch the loop (timers): give it one
    asyncio.set_event_loop(loop)
    high_sets = high_bytes = 0
    for i in range(n):
        data = mutate(rng, rng.choice(corpus), corpus) if rng.random() < 0.97 else rng.choice(corpus)
        try:
            if i % 10 == 9:
                src.handle_frame(data.replace(b"\0", b""), peers[0])
            else:
                src.handle_datagram(data, rng.choice(peers))
        except Exception as err:  # noqa: BLE001 - that is what we look for
            fail(f"GELF raised {err!r}", data)
        if chunks.bytes > chunks.max_bytes or len(chunks) > chunks.max_sets:
            fail(f"chunk buffer over its caps: {len(chunks)} sets, {chunks.bytes} bytes", data)
        high_sets, high_bytes = max(high_sets, len(chunks)), max(high_bytes, chunks.bytes)
        if i % 1000 == 0 and sum(map(len, chunks._spec_keys.values())) > len(chunks):
            fail("the chunk index outgrew the pending sets", data)
        if i % 50_000 == 0:
            chunks.expire(time.monotonic_ns())
            pipeline.flush()
    pipeline.flush()
    src.flush_counts()
    loop.close()
    reasons = Counter()
    for (_, values), v in pipeline.metrics.counter("otelmta_receiver_refused_records").series.items():
        reasons["refused:" + values[2]] += v
    for (_, values), v in pipeline.metrics.counter("otelmta_receiver_dropped_records").series.items():
        reasons["dropped:" + values[2]] += v
    reasons["accepted (log records)"] = records[0]
    reasons["max pending chunk sets"] = high_sets
    reasons["max pending chunk bytes"] = high_bytes
    return dict(reasons)


def fail(what: str, data: bytes) -> None:
    print(f"FAIL: {what}\ninput (base64): {base64.b64encode(data).decode()}", file=sys.stderr)
    sys.exit(1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=1_000_000, help="inputs per decoder family")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only", choices=["gelf", "msgpack"])
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    print(f"seed {seed}", flush=True)
    for name, fn in (("msgpack-js", fuzz_msgpack), ("gelf", fuzz_gelf)):
        if args.only and not name.startswith(args.only):
            continue
        rng = random.Random(seed)
        started = time.time()
        outcome = fn(args.inputs, rng)
        took = time.time() - started
        print(f"{name}: {args.inputs:,} inputs in {took:.0f} s ({args.inputs / took:,.0f}/s), no crash", flush=True)
        for k, v in sorted(outcome.items(), key=lambda kv: -kv[1]):
            print(f"    {k}: {v:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
