"""Property-based: any JSON object, sent plain, compressed or in chunks of any
size and order, either arrives as one record or is refused with a counted
reason; nothing escapes, nothing stays pending once a set is complete.
(bench/fuzz_decoders.py runs a million mutated inputs; this keeps a small
dose in every test run.)"""
from __future__ import annotations

import gzip
import json
import zlib

from hypothesis import HealthCheck, given, settings, strategies as st

from otel_mta import config
from otel_mta.pipeline import Pipeline
from otel_mta.sources.gelf import GelfSource

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
FIELDS = st.dictionaries(st.one_of(st.sampled_from(["short_message", "host", "level", "timestamp", "_id", "facility",
                                                    "_message_id", "_queue_id", "_user", "_to", "_mail_action"]),
                                   st.text(max_size=10).map(lambda k: "_" + k)), JSON, max_size=12)


def _source():
    settings_ = config.load(environ={"OTEL_MTA_DATA_DIR": "/nonexistent"})
    out = []
    pipeline = Pipeline(settings_, lambda sig, payload, n: out.append(n))
    return GelfSource(pipeline, settings_.sources.gelf), pipeline, out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FIELDS, st.sampled_from(["plain", "zlib", "gzip"]), st.integers(1, 300), st.randoms(use_true_random=False),
       st.booleans())
def test_any_message_arrives_once_or_is_refused_with_a_reason(msg, compression, chunk, rnd, npm):
    src, pipeline, out = _source()
    data = json.dumps(msg).encode()
    data = {"plain": data, "zlib": zlib.compress(data), "gzip": gzip.compress(data)}[compression]
    parts = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    if len(parts) > 1 and len(parts) <= 128:
        head = (lambda i: bytes([0x1E, 0x0F, 9, i, len(parts)])) if npm and compression == "zlib" else (
            lambda i: b"\x1e\x0f" + b"\x01" * 8 + bytes([i, len(parts)]))
        datagrams = [head(i) + p for i, p in enumerate(parts)]
        rnd.shuffle(datagrams)
    else:
        datagrams = [data]
    for d in datagrams:
        src.handle_datagram(d, ("10.9.8.7", 4242))
    pipeline.flush()
    src.flush_counts()
    accepted = sum(pipeline.metrics.counter("otelmta_receiver_accepted_records").series.values())
    refused = sum(pipeline.metrics.counter("otelmta_receiver_refused_records").series.values())
    assert accepted + refused == 1 and sum(out) == accepted
    assert len(src.chunks) == 0 and src.chunks.bytes == 0
    short = msg.get("short_message")
    if type(short) is str and short and len(msg) <= 256:
        assert accepted == 1
