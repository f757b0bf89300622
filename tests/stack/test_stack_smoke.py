"""The whole stack end to end: real ZoneMTA on FerretDB + Redis delivering to
an SMTP sink, with its remote log, GELF, HTTP API and /metrics observed from
outside, as the sidecar will observe them."""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path

from .proc import free_port
from .zonemta import decode_remote_log

SENDER = "alice@sender.test"


def _actions(*wanted: bytes):
    """Predicate: every wanted action name occurs in some datagram."""
    return lambda ds: all(any(w in d for d in ds) for w in wanted)


def _entries(datagrams, queue_id=None):
    entries = decode_remote_log(datagrams)
    return [e for e in entries if queue_id is None or e.get("id") == queue_id]


def _by_action(entries, action):
    found = [e for e in entries if e.get("action") == action]
    assert found, f"no {action} in {[e.get('action') for e in entries]}"
    return found[0]


def _wait_api(zm, path, check, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        body = zm.api_json(path)
        if check(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_delivered_mail_reaches_sink_and_is_logged(zonemta, smtp_sink, remote_log_listener):
    message_id = zonemta.send(SENDER, ["bob@rcpt.test"], subject="stack smoke")

    received = smtp_sink.wait_for_messages(1)
    assert received[0].rcpt_tos == ["bob@rcpt.test"]
    assert received[0].mail_from == SENDER
    assert received[0].message["Message-ID"] == message_id
    assert received[0].message["Subject"] == "stack smoke"

    datagrams = remote_log_listener.wait_for(_actions(b"QUEUED", b"ACCEPTED"),
                                             what="QUEUED and ACCEPTED")
    queued = _by_action(_entries(datagrams), "QUEUED")
    entries = _entries(datagrams, queued["id"])
    accepted = _by_action(entries, "ACCEPTED")
    assert queued["message-id"] == message_id
    assert queued["from"] == SENDER and queued["to"] == "bob@rcpt.test"
    assert queued["interface"] == "feeder" and queued["subject"] == "stack smoke"
    assert accepted["seq"] == "001" and accepted["zone"] == "default"
    assert accepted["messageId"] == message_id
    assert accepted["to"] == "bob@rcpt.test"
    assert accepted["response"].startswith("250 ")
    assert accepted["host"] == smtp_sink.host
    assert isinstance(accepted["size"], int) and accepted["size"] > 0

    # The HTTP API: zones, queue counters (the queue is empty again), metrics.
    assert {"name": "default"} in zonemta.api_json("/zones")
    counter = _wait_api(zonemta, "/counter/all/default",
                        lambda b: b["active"]["rows"] == 0 and b["deferred"]["rows"] == 0)
    assert counter == {"all": "all",
                       "active": {"entries": [{"key": "default", "value": 0}], "rows": 0},
                       "deferred": {"entries": [{"key": "default", "value": 0}], "rows": 0}}
    assert zonemta.metric("zonemta_delivery_status", status="delivered", zone="default") == 1
    assert zonemta.metric("zonemta_message_push", result="success") == 1
    assert "process_cpu_user_seconds_total" in zonemta.metrics_text()


def test_deferred_mail_stays_queued(zonemta, smtp_sink, remote_log_listener):
    smtp_sink.reply("later@", "451 4.3.0 Mailbox busy, try again later")
    zonemta.send(SENDER, ["later@rcpt.test"])

    datagrams = remote_log_listener.wait_for(_actions(b"DEFERRED"), what="DEFERRED")
    deferred = _by_action(_entries(datagrams), "DEFERRED")
    assert deferred["response"].startswith("451 4.3.0")
    assert deferred["defcount"] == 1
    assert deferred["nextattempt"] > time.time() * 1000
    assert deferred["category"]
    assert smtp_sink.refused[0].address == "later@rcpt.test"
    assert not smtp_sink.messages

    counter = _wait_api(zonemta, "/counter/all/default", lambda b: b["deferred"]["rows"] == 1)
    assert counter["deferred"]["rows"] == 1
    queued = zonemta.api_json("/queued/deferred/default")
    assert [e["recipient"] for e in queued["list"]] == ["later@rcpt.test"]
    assert zonemta.metric("zonemta_delivery_status", status="deferred", zone="default") == 1
    # The queue-size gauge is refreshed every 10 s from MongoDB (here FerretDB).
    deadline = time.monotonic() + 25
    while zonemta.metric("zonemta_queue_size", type="deferred") != 1:
        assert time.monotonic() < deadline, "zonemta_queue_size{type=deferred} never became 1"
        time.sleep(0.5)
    assert zonemta.metric("zonemta_queue_size", type="queued") == 0


def test_rejected_mail_bounces_to_sender(zonemta, smtp_sink, remote_log_listener):
    smtp_sink.reply("nobody@", "550 5.1.1 No such user here")
    zonemta.send(SENDER, ["nobody@rcpt.test"])

    datagrams = remote_log_listener.wait_for(_actions(b"REJECTED"), what="REJECTED")
    rejected = _by_action(_entries(datagrams), "REJECTED")
    assert rejected["response"].startswith("550 5.1.1")
    assert rejected["to"] == "nobody@rcpt.test"
    assert rejected["category"]

    # ZoneMTA's email-bounce plugin sends the bounce through the bounces zone,
    # which also ends at the sink.
    bounce = smtp_sink.wait_for_messages(1)[0]
    assert bounce.rcpt_tos == [SENDER]
    assert bounce.mail_from == "<>"  # aiosmtpd's spelling of the null sender
    assert zonemta.metric("zonemta_delivery_status", status="rejected", zone="default") == 1


def test_gelf_carries_error_events(zonemta_factory, gelf_listener, remote_log_listener):
    # ZoneMTA's own GELF messages are error events only (MTA [CODE] ...);
    # deliveries are in the remote log. A zone aimed at a closed port gives one.
    closed = free_port()
    zm = zonemta_factory(gelf_port=gelf_listener.port, remote_log_port=remote_log_listener.port,
                         config={"zones": {"default": {"port": closed}}})
    zm.send(SENDER, ["dave@rcpt.test"])

    def has(code):
        return lambda ds: any(code.encode() in _inflate(d) for d in ds)
    datagrams = gelf_listener.wait_for(has("[MX_CONNECT_ERROR]"), what="GELF MX_CONNECT_ERROR")
    messages = [json.loads(_inflate(d)) for d in datagrams if _inflate(d)]
    error = next(m for m in messages if "[MX_CONNECT_ERROR]" in m["short_message"])
    assert error["short_message"] == "MTA [MX_CONNECT_ERROR] MX connection error"
    assert error["_component"] == "mta" and error["facility"] == "mta"
    assert error["_remote_port"] == closed and "Connection refused" in error["_failure_msg"]
    assert error["_domain"] == "rcpt.test"

    datagrams = remote_log_listener.wait_for(_actions(b"DEFERRED"), what="DEFERRED")
    deferred = _by_action(_entries(datagrams), "DEFERRED")
    assert deferred["to"] == "dave@rcpt.test"


def test_extra_plugin_by_path_runs_in_every_context(zonemta_factory, smtp_sink, tmp_path):
    probe_out = tmp_path / "probe.jsonl"
    probe = str(Path(__file__).parent / "zonemta" / "probe-plugin.js")
    zm = zonemta_factory(plugins={
        probe: {"enabled": ["main", "receiver", "sender"], "outFile": str(probe_out)}})
    zm.send(SENDER, ["carol@rcpt.test"])
    smtp_sink.wait_for_messages(1)

    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(x) for x in probe_out.read_text().splitlines()]
        seen = {(x["context"], x.get("action")) for x in lines if x["event"] == "log:entry"}
        if ("sender", "ACCEPTED") in seen or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {x["context"] for x in lines if x["event"] == "init"} == {"main", "receiver", "sender"}
    assert ("receiver", "QUEUED") in seen and ("sender", "ACCEPTED") in seen


def _inflate(datagram: bytes) -> bytes:
    try:
        return zlib.decompress(datagram)
    except zlib.error:
        return b""


def test_redis_server_fixture(redis_server):
    with redis_server.client() as r:
        assert r.ping()
        info = r.info("server")
        assert info["tcp_port"] == redis_server.port
        assert info["redis_version"].startswith("7.")


def test_zonemta_uses_its_own_redis(zonemta, smtp_sink):
    zonemta.send(SENDER, ["erin@rcpt.test"])
    smtp_sink.wait_for_messages(1)
    # ZoneMTA keeps locks, counters and its DNS cache in Redis db 3 (config dbs.redis.db).
    deadline = time.monotonic() + 10
    with zonemta.redis.client(db=3) as r:
        while not r.keys("dns:*"):
            assert time.monotonic() < deadline, "ZoneMTA wrote nothing to its Redis"
            time.sleep(0.2)
