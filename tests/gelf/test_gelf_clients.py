"""Real GELF clients against the receiver: the npm `gelf` package that ZoneMTA
and WildDuck use (run with node), and the Python clients pygelf and graypy.
Small, large (chunked) and TCP messages must each arrive exactly once, with
the right fields."""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid

import graypy
import pygelf
import pytest

from otel_mta import ids
from otel_mta.model import MailEvent
from tests.gelf.conftest import node_gelf_send


def _big(n: int) -> str:
    """Text that deflate cannot shrink much (so it really needs n bytes)."""
    return os.urandom(n // 2).hex()


def _by_body(records):
    return {r.body.string_value: (res, a, r) for res, a, r in records}


# -- npm gelf (ZoneMTA, WildDuck) ----------------------------------------------------
@pytest.mark.parametrize("connection,chunk", [("lan", 8154), ("wan", 1420)])
async def test_npm_gelf_small_and_chunked_messages_arrive_once(gelf, connection, chunk):
    g = await gelf({"OTEL_MTA_FREE_TEXT_LENGTH_LIMIT": "off"})   # every byte of the big one, to compare
    big = _big(30 * chunk)       # ~30 chunks of deflated data
    messages = [
        {"short_message": "WILDDUCK [AUTHOK] small", "host": "imap-1", "facility": "wildduck",
         "_component": "wildduck", "_mail_action": "auth", "_sess": "sess-1", "_auth_result": "success"},
        {"short_message": "WILDDUCK [Exception] big one", "full_message": big, "host": "imap-1",
         "facility": "wildduck", "_component": "wildduck", "_exception": "yes", "_error": "boom"},
        {"short_message": "third", "host": "imap-2", "_n": 3},
    ]
    await node_gelf_send(g.port, messages, connection)
    got = _by_body(await g.records(3))
    res, a, rec = got["WILDDUCK [AUTHOK] small"]
    assert res["service.name"] == "wildduck" and res["host.name"] == "imap-1"
    assert a["wildduck.action"] == "auth" and a["wildduck.result"] == "success"
    assert a["session.id"] == "sess-1" and rec.severity_number == 9
    res, a, rec = got["WILDDUCK [Exception] big one"]
    assert a["gelf.full_message"] == big, "the chunked message was not reassembled intact"
    assert a["error.message"] == "boom" and rec.severity_number == 17
    assert got["third"][1]["gelf.n"] == 3 and got["third"][0]["host.name"] == "imap-2"
    assert g.refused() == {} and g.dropped() == {}


async def test_npm_gelf_chunk_header_is_five_bytes_and_still_reassembled(gelf):
    """npm gelf 2.0.1 writes its message id as ONE byte: Graylog's 12-byte
    header reading would see garbage. Many chunked messages in a row (ids
    repeat every 256) must all come through."""
    g = await gelf({"OTEL_MTA_FREE_TEXT_LENGTH_LIMIT": "off"})   # every byte, to compare
    messages = [{"short_message": f"m{i}", "full_message": _big(3 * 1420), "host": "h"} for i in range(40)]
    await node_gelf_send(g.port, messages, "wan")
    got = _by_body(await g.records(40))
    assert set(got) == {f"m{i}" for i in range(40)}
    assert all(got[f"m{i}"][1]["gelf.full_message"] == messages[i]["full_message"] for i in range(40))
    assert g.source.chunks.bytes == 0 and len(g.source.chunks) == 0


async def test_zonemta_error_event_joins_the_message_trace(gelf):
    """ZoneMTA's loggelf message (lib/log-setup.js) with `_message_id` = queue id
    lands in the trace of the message that queue id belongs to."""
    g = await gelf()
    qid, mid = "18f2a3b4c5d0001abc", "<20240101.abc@Sender.Example>"
    # ZoneMTA's remote log told the sidecar which Message-ID the queue id carries
    g.pipeline.mail.handle(MailEvent("QUEUED", qid, None, {"id": qid, "action": "QUEUED", "message-id": mid,
                                                            "from": "a@sender.example", "to": "b@rcpt.example"},
                                     time.time_ns(), "remote_log"))
    zonemta_gelf = {  # what ZoneMTA's loggelf() builds for lib/mail-drop.js
        "short_message": "MTA [QUEUE_STORE_FAILED] Failed to store message stream", "facility": "mta",
        "host": "mta-1", "timestamp": time.time(), "_component": "mta", "_message_id": qid,
        "_error": "E11000 duplicate key", "_interface": "feeder"}
    await node_gelf_send(g.port, [zonemta_gelf])
    records = await g.records(2)
    queued = next(r for res, a, r in records if a.get("mta.action") == "QUEUED")
    res, a, rec = next(x for x in records if x[0]["service.name"] == "zonemta" and "zonemta.code" in x[1])
    assert res["host.name"] == "mta-1"
    assert a["zonemta.code"] == "QUEUE_STORE_FAILED" and a["mta.queue_id"] == qid
    assert a["mta.message_id"] == "20240101.abc@sender.example"
    assert rec.trace_id == queued.trace_id == ids.trace_id_for(mid, None)
    assert rec.span_id == ids.root_span_id(qid), "the error hangs under the message's root span"
    assert rec.severity_number == 17   # ZoneMTA's GELF carries only failures and no level
    g.export_metrics()
    assert g.counter("zonemta.errors") == {("QUEUE_STORE_FAILED",): 1}


async def test_wildduck_forward_and_zonemta_delivery_share_a_trace(gelf):
    """WildDuck logs the RFC Message-ID (`_message_id`) and the ZoneMTA queue id
    of the forwarded copy (`_target_queue_id`); ZoneMTA's later entries for
    that queue id land in the same trace: WildDuck's maildrop queues the
    message as it is, so its delivery entries carry the same Message-ID
    (lib/maildropper.js adds one only when missing)."""
    g = await gelf()
    mid = "<CAF=abc123@mail.Example.COM>"
    forward_qid = "18f2ffff00001"
    forward = {"short_message": "WILDDUCK [FRWRDOK] Scheduled forwarding", "host": "imap-1",
               "facility": "wildduck", "_component": "wildduck", "_mail_action": "forward",
               "_user": "65a0c0ffee", "_sender": "alice@sender.example", "_recipient": "bob@example.com",
               "_target_address": "bob@elsewhere.example", "_message_id": mid,
               "_target_queue_id": forward_qid, "_forwarded": "yes"}
    store = {"short_message": "WILDDUCK [FILTER-HANDLER] After Adding Message", "host": "imap-1",
             "facility": "wildduck", "_component": "wildduck", "_user": "65a0c0ffee",
             "_sender": "alice@sender.example", "_recipient": "bob@example.com", "_message_id": mid}
    await node_gelf_send(g.port, [forward, store])
    await g.records(2)
    # ZoneMTA delivers the forwarded copy (`messageId: delivery.messageId || delivery.id`)
    g.pipeline.mail.handle(MailEvent("ACCEPTED", forward_qid, "001", {
        "id": forward_qid, "seq": "001", "action": "ACCEPTED", "zone": "default", "to": "bob@elsewhere.example",
        "mx": "mx.elsewhere.example", "response": "250 OK", "messageId": mid}, time.time_ns(), "remote_log"))
    records = await g.records(3)
    traces = {r.trace_id for _, _, r in records}
    assert traces == {ids.trace_id_for(mid, None)}
    by_body = _by_body(records)
    a = by_body["WILDDUCK [FRWRDOK] Scheduled forwarding"][1]
    assert a["mta.message_id"] == "CAF=abc123@mail.example.com"
    assert a["wildduck.forward.queue_id"] == forward_qid
    # privacy defaults: domains only, no user id
    assert a["mta.sender.domain"] == "sender.example" and a["mta.recipient.domain"] == "example.com"
    assert a["wildduck.forward.target.domain"] == "elsewhere.example"
    assert not any(k.endswith(".address") or k.startswith("user.") for k in a)
    assert "alice@" not in str(a) and "65a0c0ffee" not in str(a)
    g.export_metrics()
    assert g.counter("wildduck.mail.actions") == {("forward", "success"): 1}


# -- Python clients ------------------------------------------------------------------
def _py_logger(handler) -> logging.Logger:
    logger = logging.getLogger(f"gelf-test-{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger


def _emit(handler, records: list[tuple[int, str, dict]]) -> None:
    logger = _py_logger(handler)
    for level, msg, extra in records:
        logger.log(level, msg, extra=extra)
    handler.close()


PY_RECORDS = [
    (logging.INFO, "small info", {"queue_id": "q-small"}),
    (logging.WARNING, "large warning", {"payload": None}),  # payload filled per test
    (logging.DEBUG, "debug line", {"n": 7}),
]


def _records(chunk: int):
    big = _big(20 * chunk)
    recs = [(lvl, msg, dict(extra)) for lvl, msg, extra in PY_RECORDS]
    recs[1][2]["payload"] = big
    return recs, big


def _check_python_records(records, big: str) -> None:
    got = _by_body(records)
    assert set(got) == {"small info", "large warning", "debug line"}
    res, a, rec = got["small info"]
    assert rec.severity_number == 9 and rec.severity_text == "Informational"
    assert a["mta.queue_id"] == "q-small" and rec.trace_id == ids.trace_id_for(None, "q-small")
    assert got["large warning"][1]["gelf.payload"] == big and got["large warning"][2].severity_number == 13
    assert got["debug line"][2].severity_number == 5 and got["debug line"][1]["gelf.n"] == 7


async def test_pygelf_udp_chunked_and_tcp(gelf):
    g = await gelf({"OTEL_MTA_FREE_TEXT_LENGTH_LIMIT": "off"})   # every byte of the big one, to compare
    recs, big = _records(1300)
    udp = pygelf.GelfUdpHandler(host="127.0.0.1", port=g.port, compress=True, chunk_size=1300,
                                include_extra_fields=True)
    await asyncio.to_thread(_emit, udp, recs)
    _check_python_records(await g.records(3), big)
    recs2, big2 = _records(4000)
    tcp = pygelf.GelfTcpHandler(host="127.0.0.1", port=g.port, include_extra_fields=True)
    await asyncio.to_thread(_emit, tcp, recs2)
    records = await g.records(6)
    _check_python_records(records[3:], big2)
    assert {k[1] for k in g.counter("otelmta_receiver_accepted_records")} == {"udp", "tcp"}
    assert g.refused() == {}


async def test_pygelf_http(gelf):
    port = __import__("tests.conftest", fromlist=["free_port"]).free_port()
    g = await gelf({"OTEL_MTA_GELF_HTTP_ENDPOINT": f"127.0.0.1:{port}", "OTEL_MTA_FREE_TEXT_LENGTH_LIMIT": "off"})
    recs, big = _records(1000)
    # pygelf deflates with zlib and labels it "Content-Encoding: gzip,deflate"
    http = pygelf.GelfHttpHandler(host="127.0.0.1", port=port, compress=True, include_extra_fields=True)
    await asyncio.to_thread(_emit, http, recs)
    _check_python_records(await g.records(3), big)
    assert g.counter("otelmta_receiver_accepted_records") == {("gelf", "http"): 3}


async def test_graypy_udp_chunked_and_tcp(gelf):
    g = await gelf({"OTEL_MTA_FREE_TEXT_LENGTH_LIMIT": "off"})   # every byte of the big one, to compare
    recs, big = _records(1420)
    udp = graypy.GELFUDPHandler("127.0.0.1", g.port, gelf_chunker=graypy.handler.GELFWarningChunker(chunk_size=1420),
                                 facility="billing")
    await asyncio.to_thread(_emit, udp, recs)
    records = await g.records(3)
    _check_python_records(records, big)
    assert {res["service.name"] for res, _, _ in records} == {"billing"}  # graypy's facility names the app
    recs2, big2 = _records(4000)
    tcp = graypy.GELFTCPHandler("127.0.0.1", g.port, facility="billing")
    await asyncio.to_thread(_emit, tcp, recs2)
    _check_python_records((await g.records(6))[3:], big2)
    assert g.refused() == {} and g.dropped() == {}
