"""GELF -> OpenTelemetry log data model: severity, time, producers, privacy,
and the sidecar process serving GELF to a real OTLP receiver."""
from __future__ import annotations

import json
import socket
import zlib

import pytest

from otel_mta import ids
from tests.conftest import free_port


def send(g, *msgs, peer=("10.0.0.9", 1234)):
    for m in msgs:
        g.source.handle_datagram(zlib.compress(json.dumps(m).encode()), peer)


# OpenTelemetry log data model, Appendix B (syslog column)
@pytest.mark.parametrize("level,number,text", [
    (0, 21, "Emergency"), (1, 19, "Alert"), (2, 18, "Critical"), (3, 17, "Error"),
    (4, 13, "Warning"), (5, 10, "Notice"), (6, 9, "Informational"), (7, 5, "Debug")])
async def test_syslog_level_to_severity(gelf, level, number, text):
    g = await gelf()
    send(g, {"short_message": "x", "host": "h", "level": level})
    [(_, _, rec)] = await g.records(1)
    assert (rec.severity_number, rec.severity_text) == (number, text)


async def test_time_body_full_message_and_host(gelf):
    g = await gelf()
    send(g, {"version": "1.1", "host": "web-7", "short_message": "short", "full_message": "long\ntrace",
             "timestamp": 1700000000.123456, "facility": "billing", "line": "42", "file": "app.py"})
    [(res, a, rec)] = await g.records(1)
    assert rec.time_unix_nano == 1700000000123456000 and rec.observed_time_unix_nano > rec.time_unix_nano
    assert rec.body.string_value == "short" and a["gelf.full_message"] == "long\ntrace"
    assert res["host.name"] == "web-7" and res["service.name"] == "billing"
    assert a["code.line.number"] == 42 and a["code.file.path"] == "app.py"
    assert "gelf.version" not in a and "gelf.host" not in a


async def test_infinity_and_nan_from_python_clients_are_kept_as_text(gelf):
    """Python's json (pygelf, graypy) writes float('inf') as a bare Infinity,
    which strict JSON parsers refuse: the message still arrives."""
    g = await gelf()
    send(g, {"short_message": "ratio", "host": "h", "_ratio": float("inf"), "_low": float("-inf"),
             "_x": float("nan"), "_t": "NaN"})
    [(_, a, rec)] = await g.records(1)
    assert rec.body.string_value == "ratio"
    assert (a["gelf.ratio"], a["gelf.low"], a["gelf.x"], a["gelf.t"]) == ("Infinity", "-Infinity", "NaN", "NaN")
    assert g.refused() == {}


@pytest.mark.parametrize("msg,service", [
    ({"short_message": "MTA [SENDER_EXITED] Sender process exited unexpectedly", "_component": "mta"}, "zonemta"),
    ({"short_message": "OUTBOUND [SENDER_EXITED] x", "_component": "outbound", "facility": "outbound"}, "zonemta"),
    ({"short_message": "WILDDUCK [AUTHOK] x", "_component": "wildduck"}, "wildduck"),
    ({"short_message": "IMAP [STORE] x", "_mail_action": "store"}, "wildduck"),
    ({"short_message": "[INFO] [5B6F1C2A-0E55-4E0C-9D0C-3C9C4B2A1F00.1] [queue/smtp_forward] ok"}, "haraka"),
    ({"short_message": "hello", "facility": "haraka"}, "haraka"),
    ({"short_message": "hello"}, "unknown_service"),
])
async def test_producer_recognition(gelf, msg, service):
    g = await gelf()
    send(g, {"host": "h", **msg})
    [(res, a, _)] = await g.records(1)
    assert res["service.name"] == service
    if service == "zonemta":
        assert a["zonemta.code"] == "SENDER_EXITED"


async def test_zonemta_component_is_configurable(gelf, tmp_path):
    g = await gelf()
    # a ZoneMTA whose config.log.gelf.component is "outbound" and that we were told about
    g.source.mapper.producers["relay"] = "zonemta"
    send(g, {"short_message": "RELAY [QUEUE_ERROR] Queue error", "_component": "relay", "host": "h"})
    [(res, a, rec)] = await g.records(1)
    assert res["service.name"] == "zonemta" and a["zonemta.code"] == "QUEUE_ERROR" and rec.severity_number == 17


async def test_haraka_message_id_is_an_rfc_message_id(gelf):
    g = await gelf()
    send(g, {"short_message": "queued", "facility": "haraka", "host": "in-1", "_message_id": "<x@Y.example>",
             "_queue_id": "haraka-q1"})
    [(_, a, rec)] = await g.records(1)
    assert a["mta.message_id"] == "x@y.example" and rec.trace_id == ids.trace_id_for("x@y.example", None)
    assert g.pipeline.mail.corr.untrusted_message_id("haraka-q1") == "x@y.example"   # for other GELF records
    assert g.pipeline.mail.corr.index.get("haraka-q1") is None                         # never for ZoneMTA's


WILDDUCK_RCPT = {"short_message": "WILDDUCK [RCPT TO: bob@rcpt.example] sess-9", "host": "api-1",
                 "_component": "wildduck", "_mail_action": "rcpt_to", "_user": "65a0beef", "_queue_id": "190abc",
                 "_from": "alice@sender.example", "_to": "bob@rcpt.example", "_message_id": "<m1@sender.example>",
                 "_subject": "Quarterly numbers", "_sess": "sess-9", "_ip": "192.0.2.10",
                 "_username": "alice.smith"}


async def test_privacy_defaults_keep_nothing_personal(gelf):
    g = await gelf()
    send(g, WILDDUCK_RCPT)
    [(_, a, rec)] = await g.records(1)
    text = json.dumps(a) + rec.body.string_value
    for secret in ("alice@", "bob@", "Quarterly", "192.0.2.10", "65a0beef", "alice.smith"):
        assert secret not in text, secret
    assert rec.body.string_value == "WILDDUCK [RCPT TO: ***@rcpt.example] sess-9"
    assert a["mta.recipient.domain"] == "rcpt.example" and a["mta.sender.domain"] == "sender.example"
    assert a["mta.queue_id"] == "190abc" and a["session.id"] == "sess-9"
    # the queue id now leads other GELF records (ZoneMTA's, WildDuck's) to this Message-ID
    assert g.pipeline.mail.corr.untrusted_message_id("190abc") == "m1@sender.example"


async def test_privacy_full_and_hmac(gelf):
    g = await gelf({"OTEL_MTA_HMAC_KEY": "k"})
    g.pipeline.redactor.__init__(recipient="full", sender="hmac", subject="full", user="hmac", client="full",
                                 hmac_key=b"k")
    g.source.mapper.__init__(g.pipeline, g.settings.sources.gelf)
    send(g, WILDDUCK_RCPT)
    [(_, a, rec)] = await g.records(1)
    assert a["mta.recipient.address"] == ["bob@rcpt.example"] and a["mta.subject"] == "Quarterly numbers"
    assert a["client.address"] == "192.0.2.10"
    assert len(a["mta.sender.hash"]) == 32 and "mta.sender.address" not in a
    assert len(a["user.id_hash"]) == 32 and len(a["user.name_hash"]) == 32 and "user.id" not in a
    assert rec.body.string_value == WILDDUCK_RCPT["short_message"]


async def test_hosts_beyond_the_limit_stay_out_of_the_resource(gelf):
    g = await gelf()
    g.source.mapper.max_hosts = 3
    send(g, *[{"short_message": f"m{i}", "host": f"host-{i}", "facility": f"app{i % 2}"} for i in range(6)])
    recs = await g.records(6)
    assert len({(res["service.name"], res["host.name"]) for res, _, _ in recs}) <= 4
    assert [a.get("gelf.host") for _, a, _ in recs][3:] == ["host-3", "host-4", "host-5"]
    g.export_metrics()
    [(_, over)] = g.received.last_points("otelmta_gelf_hosts_over_limit")
    assert over.as_int == 3


# -- the sidecar process -----------------------------------------------------------
def test_sidecar_serves_gelf_udp_and_tcp_to_a_real_otlp_receiver(sidecar, grpc_receiver):
    port = free_port(socket.SOCK_DGRAM)
    sc = sidecar({"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint, "OTEL_MTA_GELF_ENDPOINT": f"127.0.0.1:{port}",
                  "OTEL_METRIC_EXPORT_INTERVAL": "300"})
    ready = sc.wait_ready()
    assert ready["sources"]["gelf"]["ready"] is True
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(zlib.compress(json.dumps({"short_message": "WILDDUCK [AUTHOK] x", "_component": "wildduck",
                                       "_mail_action": "auth", "host": "imap-1"}).encode()), ("127.0.0.1", port))
    t = socket.create_connection(("127.0.0.1", port))
    t.sendall(json.dumps({"short_message": "over tcp", "host": "h2", "level": 3}).encode() + b"\0")
    t.close()
    rx = grpc_receiver.received
    rx.wait_for(lambda r: len(r.log_records()) >= 2 and r.metrics().get("wildduck.mail.actions"),
                what="GELF log records and WildDuck metrics")
    bodies = {r.body.string_value: res["service.name"] for res, r in rx.log_records()}
    assert bodies == {"WILDDUCK [AUTHOK] x": "wildduck", "over tcp": "unknown_service"}
    assert sc.terminate() == 0
    u.close()


async def test_wildduck_with_a_custom_component_is_not_taken_for_zonemta(gelf):
    g = await gelf()
    send(g, {"short_message": "IMAP [AUTHFAIL] someone", "_component": "imap", "host": "h", "_error": "bad"})
    [(res, a, rec)] = await g.records(1)
    assert res["service.name"] == "imap" and "zonemta.code" not in a


async def test_message_id_is_normalised_once_as_the_remote_log_does(gelf):
    """"< <a@b> >" normalises to "<a@b>"; normalising that again would give
    another trace than ZoneMTA's entries for the same message."""
    from otel_mta.model import MailEvent
    g = await gelf()
    raw = "< <m2@Sender.example> >"
    send(g, {"short_message": "WILDDUCK [FRWRDOK] x", "host": "h", "_component": "wildduck",
             "_message_id": raw, "_target_queue_id": "fq-2"})
    [(_, a, rec)] = await g.records(1)
    queued = MailEvent("QUEUED", "q-2", None, {"id": "q-2", "action": "QUEUED", "message-id": raw}, 0, "remote_log")
    trace, mid = g.pipeline.mail.corr.resolve(queued)
    assert a["mta.message_id"] == mid == "<m2@sender.example>" and rec.trace_id == trace
    assert g.pipeline.mail.corr.untrusted_message_id("fq-2") == mid


async def test_a_line_number_int_cannot_read_is_kept_as_text(gelf):
    g = await gelf()
    send(g, {"short_message": "x", "host": "h", "line": "\u00b2"}, {"short_message": "y", "host": "h", "_line": "9" * 30})
    assert [a["code.line.number"] for _, a, _ in await g.records(2)] == ["\u00b2", "9" * 30]
    assert g.refused() == {}


async def test_huge_free_text_is_cut_to_the_default_and_counted(gelf):
    """A 200,000-character full_message, stack trace and passed-through field
    (well within the 1 MiB message limit) keep 4,096 characters each by
    default; short fields and identifiers are untouched; the cuts are counted."""
    g = await gelf()
    big = "é" + "x" * 199_999
    send(g, {"short_message": "boom", "host": "h", "full_message": big, "_stack": big, "_detail": big,
             "_error": "short error", "_queue_id": "18c5f3d2a3e0001234"})
    [(_, a, rec)] = await g.records(1)
    assert len(a["gelf.full_message"]) == len(a["exception.stacktrace"]) == len(a["gelf.detail"]) == 4096
    assert a["gelf.full_message"] == big[:4096]
    assert a["error.message"] == "short error" and a["mta.queue_id"] == "18c5f3d2a3e0001234"
    assert len(rec.SerializeToString()) < 20_000
    g.export_metrics()
    [point] = [p for a, p in g.received.last_points("otelmta_attribute_values_truncated") if a["signal"] == "logs"]
    assert point.as_int >= 3


async def test_otel_attribute_value_length_limits_cut_every_string(gelf):
    g = await gelf({"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "1000", "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT": "12",
                    "OTEL_MTA_FREE_TEXT_LENGTH_LIMIT": "off"})
    send(g, {"short_message": "a body is not an attribute: never cut", "host": "h", "full_message": "y" * 50,
             "_queue_id": "18c5f3d2a3e0001234", "_n": 12345678901234, "_list": ["a" * 20, "b"]})
    [(_, a, rec)] = await g.records(1)
    assert a["gelf.full_message"] == "y" * 12 and a["mta.queue_id"] == "18c5f3d2a3e0"   # the log record limit wins
    assert a["gelf.n"] == 12345678901234                 # numbers are never cut
    assert a["gelf.list"] == '["aaaaaaaaaa'             # GELF arrays arrive as JSON text
    assert rec.body.string_value == "a body is not an attribute: never cut"


async def test_code_is_an_error_type_only_on_a_failure(gelf):
    """`_code` becomes error.type only when the record is a failure; otherwise
    it is the plain attribute gelf.code, so that a query for errors
    (error.type present) does not find WildDuck's successful stores."""
    g = await gelf()
    send(g,
         {"short_message": "WILDDUCK [STORE] stored", "host": "h", "_component": "wildduck",
          "_mail_action": "store", "_code": 250},
         # WildDuck's filter-handler.js, a forward that was not made (its real fields)
         {"short_message": "[FRWRDFAIL] Skipped forwarding due to rate limiting", "host": "h",
          "_component": "wildduck", "_mail_action": "forward", "_error": "Skipped forwarding due to rate limiting",
          "_code": "ERATELIMIT", "_forwarded": "no"},
         {"short_message": "MTA [QUEUE_STORE_FAILED] could not store", "host": "h", "_component": "mta",
          "_code": "E11000"},                                          # ZoneMTA's GELF: failures only
         {"short_message": "job done", "host": "h", "level": 6, "_code": "OK"},
         {"short_message": "job failed", "host": "h", "level": 3, "_code": 17})
    got = [a for _, a, _ in await g.records(5)]
    assert [(a.get("error.type"), a.get("gelf.code")) for a in got] == [
        (None, 250), ("ERATELIMIT", None), ("E11000", None), (None, "OK"), ("17", None)]


# -- trust: GELF is unauthenticated UDP ------------------------------------------------
async def test_gelf_cannot_move_zonemta_entries_into_another_trace(gelf, js_encode):
    """Anyone who can send a UDP datagram can send GELF. A message naming a
    queue id the remote log established (QUEUED) with another Message-ID, or
    claiming a queue id first, must not move ZoneMTA's own entries of that
    queue id (which carry only the queue id) into another trace: GELF only
    gives hints to other GELF records (docs/trace-ids.md)."""
    from otel_mta.sources.remote_log import RemoteLogSource
    g = await gelf()
    remote = RemoteLogSource(g.pipeline, g.settings.sources.remote_log)
    qid, mid = "18c5f3d2a3e0001234", "real@mail.example.org"
    real = ids.trace_id_for(mid, None)
    forged = ids.trace_id_for("forged@attacker.example", None)
    for d in js_encode([{"id": qid, "action": "QUEUED", "message-id": f"<{mid}>", "from": "a@x.example",
                         "to": "b@y.example", "interface": "feeder"}]):
        remote.handle_datagram(d)
    hostile = {"short_message": "WILDDUCK [FRWRDOK] x", "host": "h", "_component": "wildduck",
               "_mail_action": "forward", "_message_id": "<forged@attacker.example>", "_queue_id": qid,
               "_target_queue_id": "18c5f3d2a3e0009999"}
    send(g, hostile)
    # entries that carry only the queue id: a bounce of the known message, a drop of the claimed one
    for d in js_encode([{"id": qid, "seq": "001", "action": "QUEUE_BOUNCE", "bounceType": "failure",
                         "queued": "yes", "bounceId": "18c5f3d2a3e0005555"},
                        {"id": "18c5f3d2a3e0009999", "seq": "001", "action": "DROP", "reason": "suppressed",
                         "recipient": "c@z.example"}]):
        remote.handle_datagram(d)
    recs = await g.records(4)
    by_action = {a.get("mta.action"): r.trace_id for _, a, r in recs}
    assert by_action["QUEUED"] == by_action["QUEUE_BOUNCE"] == real
    assert by_action["DROP"] == ids.trace_id_for(None, "18c5f3d2a3e0009999")   # its own queue id, not forged
    [gelf_rec] = [r for _, a, r in recs if "mta.action" not in a]
    assert gelf_rec.trace_id == forged          # the hostile record mislabels only itself
    assert g.pipeline.mail.corr.index.get(qid) == mid
    assert g.pipeline.mail.corr.index.get("18c5f3d2a3e0009999") is None


async def test_gelf_records_still_join_each_other_through_hints(gelf):
    """WildDuck names a queue id with its Message-ID; ZoneMTA's GELF error for
    that queue id (its `_message_id` is the queue id) joins the same trace."""
    g = await gelf()
    send(g, {"short_message": "WILDDUCK [FRWRDOK] Scheduled forwarding", "host": "h", "_component": "wildduck",
             "_mail_action": "forward", "_message_id": "<m9@sender.example>", "_target_queue_id": "18f2ffff00009"},
         {"short_message": "MTA [QUEUE_FETCH_FAILED] could not fetch", "host": "h", "_component": "mta",
          "_message_id": "18f2ffff00009"})
    recs = await g.records(2)
    assert {r.trace_id for _, _, r in recs} == {ids.trace_id_for("m9@sender.example", None)}


async def test_a_message_queued_without_message_id_keeps_its_gelf_in_its_trace(gelf, js_encode):
    """The remote log saw the message queued without a Message-ID ("<>"): the
    index knows it is traced by its queue id, so ZoneMTA's GELF error for that
    queue id lands there, and a GELF claim of a Message-ID for it cannot pull
    the message's later GELF records into another trace."""
    from otel_mta.sources.remote_log import RemoteLogSource
    g = await gelf()
    remote = RemoteLogSource(g.pipeline, g.settings.sources.remote_log)
    qid = "18c5f3d2a3e0007777"
    for d in js_encode([{"id": qid, "action": "QUEUED", "message-id": "<>", "from": "a@x.example",
                         "to": "b@y.example", "interface": "feeder"}]):
        remote.handle_datagram(d)
    send(g, {"short_message": "WILDDUCK [FRWRDOK] x", "host": "h", "_component": "wildduck",
             "_mail_action": "forward", "_message_id": "<claimed@elsewhere.example>", "_target_queue_id": qid},
         {"short_message": "MTA [QUEUE_FETCH_FAILED] could not fetch", "host": "h", "_component": "mta",
          "_message_id": qid})
    recs = await g.records(3)
    own = ids.trace_id_for(None, qid)
    [queued] = [r for _, a, r in recs if a.get("mta.action") == "QUEUED"]
    [zonemta_gelf] = [r for _, a, r in recs if r.body.string_value.startswith("MTA [QUEUE_FETCH_FAILED]")]
    assert queued.trace_id == zonemta_gelf.trace_id == own
    assert g.pipeline.mail.corr.index.get(qid) == ""      # known: no Message-ID
    assert g.pipeline.correlator.lookup(qid) == (own, False)
