"""The remote-log decoder against bytes made by ZoneMTA's real encoder
(msgpack-js@0.3.0 in node), and against hostile input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from otel_mta.sources import msgpack_js
from otel_mta.sources.msgpack_js import DecodeError, decode, decode_py

ENTRIES = Path(__file__).parent / "fixtures" / "remote_log" / "entries.jsonl"
DECODERS = [pytest.param(decode_py, id="python")]
if msgpack_js.HAVE_C:
    DECODERS.append(pytest.param(decode, id="c"))


def _expected(value):
    """What decoding must give: undefined and null both become None."""
    if value == "__undefined__":
        return None
    if isinstance(value, dict):
        return {k: _expected(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expected(v) for v in value]
    return value


def _numbers_equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_numbers_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_numbers_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def real_entries(js_encode):
    entries = [json.loads(line) for line in ENTRIES.read_text().splitlines()]
    return list(zip(entries, js_encode(entries)))


def test_c_decoder_is_built():
    # CI builds it; without it the sidecar falls short of its throughput target
    assert msgpack_js.HAVE_C


@pytest.mark.parametrize("dec", DECODERS)
def test_every_real_zonemta_entry_decodes_exactly(real_entries, dec):
    actions = set()
    for entry, data in real_entries:
        got = dec(data)
        assert _numbers_equal(got, _expected(entry)), entry["action"]
        actions.add(entry["action"])
    assert {"QUEUED", "NOQUEUE", "ACCEPTED", "DEFERRED", "REJECTED", "DELETED", "DROP",
            "QUEUE_BOUNCE", "SPAMCHECK", "VIRUSCHECK"} <= actions


def test_encoder_dialect_is_what_we_claim(real_entries):
    """msgpack-js writes undefined as 0xc4 and integers beyond 32 bits (a
    millisecond timestamp) as float64; a modern msgpack decoder misreads them."""
    entry, data = next((e, d) for e, d in real_entries if e["action"] == "DEFERRED")
    assert b"\xa7httpUrl\xc4" in data
    assert b"\xabnextattempt\xcb" in data
    assert decode(data)["nextattempt"] == float(entry["nextattempt"])
    import msgpack
    try:
        modern = msgpack.unpackb(data, raw=False)
    except Exception:
        return
    assert modern != _expected(entry)


@pytest.mark.parametrize("dec", DECODERS)
def test_long_and_unicode_values(js_encode, dec):
    entry = {"id": "18c5", "action": "QUEUED", "to": ",".join(f"user{i}@example{i % 7}.com" for i in range(4000)),
             "subject": "Ünïcødé 🚀 " * 20, "empty": "", "n": -5, "i8": -100, "i16": -30000, "i32": -70000,
             "u8": 200, "u16": 60000, "u32": 3_000_000_000, "f": 1.5, "t": True, "nil": None}
    [data] = js_encode([entry])
    assert len(entry["to"]) > 65535 and b"\xdb" in data  # raw 32
    assert _numbers_equal(dec(data), entry)


@pytest.mark.parametrize("dec", DECODERS)
def test_every_truncation_is_a_clean_error(real_entries, dec):
    for _, data in real_entries:
        for cut in range(len(data)):
            with pytest.raises(DecodeError) as err:
                dec(data[:cut])
            assert err.value.reason in ("empty", "truncated")


@pytest.mark.parametrize("dec", DECODERS)
@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"\xc1", "unknown_type"),
    (b"\x80\x01", "trailing_bytes"),
    (b"\xdf\xff\xff\xff\xff", "truncated"),         # a map claiming 4 billion entries
    (b"\xdd\x7f\xff\xff\xff" + b"\x00" * 8, "truncated"),
    (b"\x91" * 40 + b"\x00", "too_deep"),
    (b"\x81\x80\x01", "bad_key"),                    # a map as a key
    (b"\xa3\xff\xfe\xfd", None),                     # invalid UTF-8 is repaired, not refused
])
def test_hostile_input(dec, data, reason):
    if reason is None:
        assert dec(data) == "\ufffd\ufffd\ufffd"
        return
    with pytest.raises(DecodeError) as err:
        dec(data)
    assert err.value.reason == reason


def _outcome(dec, data):
    try:
        return ("ok", dec(data))
    except DecodeError as err:
        return ("error", err.reason)


@pytest.mark.skipif(not msgpack_js.HAVE_C, reason="C decoder not built")
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_c_and_python_agree_on_random_bytes(data):
    a, b = _outcome(decode, data), _outcome(decode_py, data)
    if a[0] == "ok" and b[0] == "ok":
        assert repr(a[1]) == repr(b[1])  # repr: NaN != NaN
    else:
        assert a == b


@pytest.mark.skipif(not msgpack_js.HAVE_C, reason="C decoder not built")
def test_c_and_python_agree_on_mutated_real_datagrams(real_entries):
    import random
    rnd = random.Random(7)
    for _, data in real_entries:
        for _ in range(300):
            buf = bytearray(data)
            for _ in range(rnd.randint(1, 4)):
                buf[rnd.randrange(len(buf))] = rnd.randrange(256)
            a, b = _outcome(decode, bytes(buf)), _outcome(decode_py, bytes(buf))
            assert (a[0], repr(a[1])) == (b[0], repr(b[1]))
