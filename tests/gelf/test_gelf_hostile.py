"""Hostile and broken input: every refusal is counted by reason, memory stays
bounded, and the receiver keeps serving the messages that follow."""
from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import struct
import time
import zlib

import pytest

from otel_mta.sources.gelf.chunks import Reassembler
from otel_mta.sources.gelf.decode import GelfError, decode

OK = json.dumps({"version": "1.1", "host": "h", "short_message": "still serving"}).encode()


def spec_chunks(payload: bytes, size: int, msg_id: bytes | None = None, count: int | None = None) -> list[bytes]:
    msg_id = msg_id or os.urandom(8)
    parts = [payload[i:i + size] for i in range(0, len(payload), size)]
    n = len(parts) if count is None else count
    return [b"\x1e\x0f" + msg_id + struct.pack("BB", i, n) + p for i, p in enumerate(parts)]


def npm_chunks(payload: bytes, size: int, msg_id: int) -> list[bytes]:
    parts = [payload[i:i + size] for i in range(0, len(payload), size)]
    return [bytes([0x1E, 0x0F, msg_id & 0xFF, i, len(parts)]) + p for i, p in enumerate(parts)]


def message(text: str, **fields) -> bytes:
    return json.dumps({"version": "1.1", "host": "h", "short_message": text, **fields}).encode()


def feed(g, datagrams, peer=("10.0.0.1", 5555)) -> None:
    for d in datagrams:
        g.source.handle_datagram(d, peer)


async def test_chunks_in_any_order_with_duplicates_and_interleaved_sets(gelf):
    g = await gelf()
    a = spec_chunks(zlib.compress(message("A", _x=os.urandom(3000).hex())), 500, b"\x05" * 8)
    b = spec_chunks(message("B", _y="y" * 3000), 400, b"\x06" * 8)
    mixed = [x for pair in zip(reversed(a), b) for x in pair] + a[len(b):] + b[len(a):]
    feed(g, mixed[:3] + mixed[:3] + mixed[3:] + [b[0]])   # duplicates before and after completion
    bodies = sorted(r.body.string_value for _, _, r in await g.records(2))
    assert bodies == ["A", "B"]
    assert "duplicate_chunk" not in g.dropped()        # a chunk sent twice is not a loss
    assert {v[2]: n for v, n in g.counter("otelmta_receiver_deduplicated_records").items()} == {"duplicate_chunk": 3}
    assert g.refused() == {} and len(g.source.chunks) == 1   # b[0] after completion opened a new set


async def test_truncated_chunk_set_times_out_and_is_counted(gelf):
    g = await gelf({})
    src = g.source
    parts = spec_chunks(message("never whole", _z="z" * 5000), 1000)
    feed(g, parts[:-1])
    assert len(src.chunks) == 1 and src.chunks.bytes > 0
    src.chunks.expire(time.monotonic_ns() + 6 * 10**9)
    assert len(src.chunks) == 0 and src.chunks.bytes == 0
    assert g.dropped() == {"chunk_timeout": 1}
    feed(g, [parts[-1], OK])   # the straggler opens a set of its own; the service goes on
    assert [r.body.string_value for _, _, r in await g.records(1)] == ["still serving"]


async def test_more_than_128_chunks_is_refused(gelf):
    g = await gelf()
    payload = message("too many", _p="p" * 140 * 10)
    feed(g, spec_chunks(payload, 10, msg_id=b"\x05" * 8)[:5])   # id bytes no npm-gelf reading accepts
    feed(g, [bytes([0x1E, 0x0F, 7, 0, 200]) + b"xx"])
    assert g.refused() == {"too_many_chunks": 6}
    assert len(g.source.chunks) == 0


async def test_chunk_count_mismatch_and_bad_headers(gelf):
    g = await gelf()
    mid = b"\x05" * 8   # no npm-gelf reading of these headers is plausible
    first = spec_chunks(message("x", _a="a" * 300), 100, mid)
    feed(g, first[:1] + [b"\x1e\x0f" + mid + bytes([1, 9]) + b"zz", b"\x1e\x0f", b"\x1e\x0f" + bytes(10)])
    assert g.refused() == {"chunk_count_mismatch": 1, "bad_chunk": 2}


@pytest.mark.parametrize("compress", [zlib.compress, gzip.compress], ids=["zlib", "gzip"])
async def test_decompression_bomb_is_cut_off_without_inflating_it(gelf, compress):
    g = await gelf()
    bomb = compress(b'{"short_message":"' + b"A" * (60 << 20) + b'"}', 9)
    assert len(bomb) < 65507   # one datagram
    started = time.process_time()
    feed(g, [bomb])
    assert time.process_time() - started < 0.5, "the whole bomb was inflated"
    assert g.refused() == {"too_large": 1}
    # the same bomb in chunks
    feed(g, spec_chunks(bomb, 8000))
    assert g.refused() == {"too_large": 2}
    feed(g, [OK])
    assert len(await g.records(1)) == 1


async def test_invalid_json_utf8_and_shapes(gelf):
    g = await gelf()
    feed(g, [b"{not json", b"[1,2]", b"\x78\x9c\x00\x01garbage", zlib.compress(b"{")[:-3],
             b'{"host":"h"}', json.dumps({"short_message": "deep", "_d": [[[[[[[[[[1]]]]]]]]]]}).encode(),
             b"[" * 5000 + b"]" * 5000, json.dumps({"short_message": "many", **{f"_f{i}": i for i in range(300)}}).encode(),
             b'{"short_message":"caf\xe9 \xff ok","host":"h"}'])
    assert g.refused() == {"invalid_json": 1, "not_an_object": 1, "bad_compression": 2, "missing_short_message": 1,
                           "too_deep": 2, "too_many_fields": 1}
    [(_, _, rec)] = await g.records(1)
    assert rec.body.string_value == "caf\ufffd \ufffd ok"   # broken bytes replaced, message kept


async def test_reserved_id_never_leaks_and_odd_values_are_kept_sane(gelf):
    g = await gelf()
    feed(g, [message("odd", _id="secret-id", _empty="", _null=None, _obj={"a": {"b": 1}}, _list=[1, "x"],
                     timestamp="not a time", level=42, _bool=True, _float=1.5, **{"": "no key", "custom": "v"})])
    [(_, a, rec)] = await g.records(1)
    assert "gelf.id" not in a and "secret-id" not in str(a)
    assert a["gelf.obj"] == '{"a":{"b":1}}' and a["gelf.list"] == '[1,"x"]'
    assert a["gelf.bool"] is True and a["gelf.float"] == 1.5 and a["gelf.custom"] == "v"
    assert "gelf.empty" not in a and "gelf.null" not in a
    assert rec.severity_number == 0 and abs(rec.time_unix_nano - time.time_ns()) < 5e9


async def test_a_flood_of_chunk_set_ids_stays_bounded_and_real_sets_still_complete(gelf):
    g = await gelf({})
    src = g.source
    src.chunks.max_sets, src.chunks.max_bytes = 1000, 2 << 20
    legit = spec_chunks(zlib.compress(message("legit", _x=os.urandom(4000).hex())), 1000)
    for i in range(20_000):
        feed(g, [b"\x1e\x0f" + os.urandom(8) + bytes([0, 2]) + os.urandom(200)], peer=("6.6.6.6", i % 50000))
        if i == 10_000:
            feed(g, legit)
        assert len(src.chunks) <= 1000 and src.chunks.bytes <= 2 << 20
    assert [r.body.string_value for _, _, r in await g.records(1)] == ["legit"]
    assert g.dropped()["chunk_sets_full"] >= 19_000


async def test_byte_cap_drops_oldest_sets(gelf):
    g = await gelf()
    src = g.source
    src.chunks.max_bytes = 100_000
    for _ in range(10):
        feed(g, spec_chunks(os.urandom(60_000), 30_000)[:1])
    assert src.chunks.bytes <= 100_000 and g.dropped()["chunk_bytes_full"] >= 7


def test_reassembler_reads_npm_and_spec_headers_from_one_sender():
    r = Reassembler()
    peer = ("10.1.1.1", 40000)
    payload = zlib.compress(os.urandom(5000))
    got = [r.add(d, peer, 0) for d in npm_chunks(payload, 1420, 0x1234)]
    assert got[-1] == (payload, "npm") and all(x is None for x in got[:-1])
    r.confirm(peer, "npm")
    # later chunks (not the first) of this sender are read as npm-gelf too
    parts = npm_chunks(payload, 1000, 7)
    assert [r.add(d, peer, 0) for d in parts[::-1]][-1] == (payload, "npm")
    spec = spec_chunks(b"x" * 3000, 1000)
    assert [r.add(d, ("10.1.1.2", 1), 0) for d in spec][-1] == (b"x" * 3000, "spec")


def test_decode_caps_uncompressed_size():
    with pytest.raises(GelfError) as e:
        decode(b'{"short_message":"' + b"x" * 2000 + b'"}', 1000)
    assert e.value.reason == "too_large"


# -- TCP -----------------------------------------------------------------------------
async def _tcp(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


async def test_tcp_oversized_frame_is_skipped_and_the_connection_keeps_working(gelf):
    g = await gelf({"OTEL_MTA_GELF_ENDPOINT": "127.0.0.1:0"})
    g.source.tcp.max_size = 10_000
    reader, writer = await _tcp(g.port)
    huge = message("huge", _x="x" * 50_000)
    writer.write(message("before") + b"\0" + huge[:30_000])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(huge[30_000:] + b"\0" + b"{broken\0" + message("after") + b"\0")
    await writer.drain()
    bodies = [r.body.string_value for _, _, r in await g.records(2)]
    assert bodies == ["before", "after"]
    assert g.refused() == {"too_large": 1, "invalid_json": 1}
    writer.close()


async def test_tcp_connection_limit_and_idle_timeout(gelf):
    g = await gelf()
    tcp = g.source.tcp
    tcp.max_connections = 2
    conns = [await _tcp(g.port) for _ in range(3)]
    await asyncio.sleep(0.1)
    assert len(tcp.connections) == 2 and g.refused() == {"too_many_connections": 1}
    assert await asyncio.wait_for(conns[2][0].read(), 2) == b""   # the third was closed
    tcp.idle_timeout = 0.05
    await asyncio.sleep(0.1)
    assert tcp.close_idle() == 2 and len(tcp.connections) == 0
    for r, w in conns:
        w.close()
    # a new client is served again
    _, w = await _tcp(g.port)
    w.write(OK + b"\0")
    await w.drain()
    assert len(await g.records(1)) == 1
    w.close()


async def test_tcp_and_http_push_back_while_the_export_queue_is_full(gelf):
    """Collector down, queue full: TCP senders are held back by TCP's own flow
    control (the sidecar stops reading), HTTP senders get 503 + Retry-After;
    once there is room again every TCP message arrives, exactly once."""
    import aiohttp
    g = await gelf({"OTEL_MTA_GELF_HTTP_ENDPOINT": "127.0.0.1:0"})
    full = [True]
    g.pipeline.congested = lambda: full[0]
    n = 20_000   # ~1.5 MB: more than one read of the socket
    frames = b"".join(json.dumps({"version": "1.1", "host": "h", "short_message": f"m{i}"}).encode() + b"\0"
                      for i in range(n))
    reader, writer = await _tcp(g.port)
    writer.write(frames)
    await asyncio.sleep(0.5)
    assert g.source.tcp.paused and g.source.status()["tcp_paused"]
    g.pipeline.flush()
    taken = len(g.received.log_records())
    assert taken < n                      # what the first read brought, then no more reading
    await asyncio.sleep(0.5)
    g.pipeline.flush()
    assert len(g.received.log_records()) == taken
    url = f"http://127.0.0.1:{g.source.http.port}/gelf"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=OK) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "2"
        full[0] = False
        got = await g.records(n, timeout=30)
        assert [r.body.string_value for _, _, r in got] == [f"m{i}" for i in range(n)]
        assert not g.source.tcp.paused
        async with http.post(url, data=OK) as r:
            assert r.status == 202
    assert g.refused() == {}
    # the 503 is counted: a GELF HTTP client rarely sends it again
    assert g.counter("otelmta_receiver_pushed_back_requests") == {("gelf", "http", "congested"): 1}
    writer.close()


async def test_real_socket_garbage_does_not_stop_the_listener(gelf):
    g = await gelf()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = __import__("random").Random(7)
    for d in [b"", b"\x1e", b"\x1f\x8b", b"\x78\x9c", b"x" + rng.randbytes(1000), b"\x1e\x0f" + bytes(60), OK]:
        s.sendto(d, ("127.0.0.1", g.port))
    assert [r.body.string_value for _, _, r in await g.records(1)] == ["still serving"]
    assert sum(g.refused().values()) == 6
    s.close()


# -- HTTP ----------------------------------------------------------------------------
def _post(port: int, body: bytes, headers: dict | None = None) -> tuple[int, str]:
    import urllib.error
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{port}/gelf", data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def test_http_answers_and_limits(gelf):
    from tests.conftest import free_port
    port = free_port()
    g = await gelf({"OTEL_MTA_GELF_HTTP_ENDPOINT": f"127.0.0.1:{port}", "OTEL_MTA_GELF_ENDPOINT": "127.0.0.1:0"})
    bomb = gzip.compress(b'{"short_message":"' + b"A" * (50 << 20) + b'"}')
    results = [await asyncio.to_thread(_post, port, body, hdr) for body, hdr in [
        (message("over http"), {}),
        (gzip.compress(message("gzipped")), {"Content-Encoding": "gzip"}),
        (b"{nope", {}),
        (bomb, {"Content-Encoding": "gzip"}),
        (b"x" * (2 << 20), {}),
    ]]
    assert [code for code, _ in results] == [202, 202, 400, 413, 413]
    assert results[2][1].strip() == "invalid_json"
    assert sorted(r.body.string_value for _, _, r in await g.records(2)) == ["gzipped", "over http"]
    assert g.refused() == {"invalid_json": 1, "too_large": 2}
