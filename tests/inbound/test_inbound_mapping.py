"""What the Haraka plugin's events become, through an in-process pipeline, from
events a real Haraka 3.3.4 sent (tests/fixtures/haraka/batches.json, recorded
with haraka-plugin/test/record.js): inbound SERVER spans in each message's
trace, relay attempts as their children, Haraka's log lines in the trace of
their transaction, refusals, metrics, and the privacy modes."""
from __future__ import annotations

import collections
import copy
import json
from pathlib import Path

import pytest

from otel_mta import config, ids
from otel_mta.pipeline import Pipeline
from otel_mta.signals.holding import Holding
from otel_mta.signals.inbound import mask_client, transaction_of
from otel_mta.sources.events_ingest import Ingest
from tests.otlp_receiver import REQUEST, Received, attrs

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "haraka" / "batches.json"
BATCHES = json.loads(FIXTURE.read_text())
EVENTS = [e for b in BATCHES for e in b["events"]]
TRANSACTIONS = {e["transaction_id"]: e for e in EVENTS if e["type"] == "haraka.transaction"}


def run(tmp_path, batches=BATCHES, settings_yaml: str = "", env: dict | None = None):
    """The batches through a pipeline; returns (Received, results)."""
    rx = Received()
    path = tmp_path / "otel-mta.yaml"
    path.write_text(settings_yaml or "{}\n")
    settings = config.load(path, environ={"OTEL_MTA_DATA_DIR": "/nonexistent", **(env or {})})
    pipeline = Pipeline(settings, lambda sig, payload, n: rx.add(sig, REQUEST[sig].FromString(payload)))
    ingest = Ingest(pipeline)
    results = [ingest.batch(copy.deepcopy(b)) for b in batches]
    pipeline.tick(flush_all=True)
    pipeline.flush()
    payload, _ = pipeline.metrics.collect()
    rx.add("metrics", REQUEST["metrics"].FromString(payload))
    return rx, results


def spans(rx, name):
    return [s for res, s in rx.spans() if s.name == name and res["service.name"] == "haraka"]


def total(rx, name, **match):
    return sum(p.as_int for a, p in rx.last_points(name) if all(a.get(k) == v for k, v in match.items()))


def test_every_recorded_event_is_valid_and_mapped(tmp_path):
    rx, results = run(tmp_path)
    assert sum(r.accepted for r in results) == len(EVENTS)
    assert not any(r.rejected for r in results)
    assert collections.Counter(e["type"] for e in EVENTS)["haraka.transaction"] == len(spans(rx, "inbound")) == 7


def test_an_inbound_span_per_transaction_in_its_messages_trace(tmp_path):
    rx, _ = run(tmp_path)
    for span in spans(rx, "inbound"):
        a = attrs(span.attributes)
        ev = TRANSACTIONS[a["haraka.transaction.id"]]
        assert span.span_id == ids.inbound_span_id(ev["transaction_id"])
        assert span.parent_span_id == b""
        assert span.start_time_unix_nano == ev["start_ms"] * 1_000_000
        assert span.end_time_unix_nano == ev["time_ms"] * 1_000_000
        if "message_id" in ev:
            assert span.trace_id == ids.trace_id_for(ev["message_id"], None)
            assert a["mta.message_id"] == ids.normalize_message_id(ev["message_id"])
        else:
            assert span.trace_id == ids.trace_id_from_key("qid:" + ev["transaction_id"])
        assert a["mta.inbound.outcome"] == ev["outcome"]
        assert a.get("mta.smtp.code") == ev.get("code")
        assert a.get("mta.inbound.plugin") == ev.get("plugin")
        # Haraka refusing the message after receiving it (no queue took it) is Haraka failing; a plugin's verdict is not
        failed = ev["outcome"] in ("refused", "deferred") and ev.get("stage") == "queue"
        assert span.status.code == (2 if failed else 0), ev.get("stage")


def test_a_log_record_per_recipient_with_the_reply_haraka_gave(tmp_path):
    rx, _ = run(tmp_path)
    logs = [(attrs(r.attributes), r) for _, r in rx.log_records() if r.event_name == "haraka.rcpt"]
    expected = sorted((t["transaction_id"], r["address"].rsplit("@", 1)[1], r["outcome"], r.get("code"),
                       r["time_ms"] * 1_000_000, ids.inbound_span_id(t["transaction_id"]))
                      for t in TRANSACTIONS.values() for r in t["recipients"])
    got = sorted((a["haraka.transaction.id"], a["mta.recipient.domain"], a["mta.inbound.outcome"], a.get("mta.smtp.code"),
                  r.time_unix_nano, r.span_id) for a, r in logs)
    assert got == expected
    addresses = {r["address"] for t in TRANSACTIONS.values() for r in t["recipients"]}
    for a, r in logs:
        body = r.body.string_value
        assert body.startswith(f"RCPT {a['mta.inbound.outcome']} {a['haraka.transaction.id']} to {a['mta.recipient.domain']}")
        assert not any(addr in body for addr in addresses), "addresses reduced to their domain by default"
    refused = [r for a, r in logs if a.get("mta.inbound.plugin") == "test_policy" and a["mta.smtp.code"] == 550]
    assert any(r.body.string_value.endswith(": 550 No such user here") for r in refused)
    default = [a for a, _ in logs if a.get("mta.smtp.response", "").startswith("I cannot deliver mail for")]
    assert default and all("mta.inbound.plugin" not in a for a in default), "Haraka itself refused: no plugin"
    assert default[0]["mta.smtp.response"] == "I cannot deliver mail for <***@other.test>"


def test_relay_attempts_are_delivery_spans_under_the_inbound_span(tmp_path):
    rx, _ = run(tmp_path)
    relayed = next(t for t in TRANSACTIONS.values() if t.get("message_id") == "<rec-relay@sender.test>")
    inbound = next(s for s in spans(rx, "inbound") if attrs(s.attributes)["haraka.transaction.id"] == relayed["transaction_id"])
    attempts = [s for s in spans(rx, "delivery") if s.parent_span_id == inbound.span_id]
    outcomes = collections.defaultdict(list)
    for s in attempts:
        outcomes[attrs(s.attributes)["mta.delivery.outcome"]].append(s)
    # bob delivered, gone bounced, grey greylisted then delivered on the retry
    assert {o: len(v) for o, v in outcomes.items()} == {"delivered": 2, "deferred": 1, "rejected": 1}
    assert all(s.trace_id == inbound.trace_id and s.kind == 3 for s in attempts)
    assert len({s.span_id for s in attempts}) == 4
    [rejected_span] = outcomes["rejected"]
    rejected = attrs(rejected_span.attributes)
    assert rejected_span.status.code == 2
    assert (rejected["mta.smtp.code"], rejected["mta.smtp.enhanced_status"]) == (550, "5.1.1")
    assert rejected["mta.recipient.domain"] == "dest.test" and rejected["error.type"] == "rejected"
    deferred = attrs(outcomes["deferred"][0].attributes)
    assert deferred["mta.defer.count"] == 1 and deferred["mta.smtp.code"] == 451
    delivered = attrs(outcomes["delivered"][0].attributes)
    assert delivered["server.address"] and delivered["network.protocol.name"] == "smtp"
    assert delivered["mta.recipient.count"] == 1
    by_outcome = collections.Counter()
    for a, p in rx.last_points("mta.delivery.attempts"):
        by_outcome[a["mta.delivery.outcome"]] += p.as_int
    # both messages (the second: dave delivered, busy deferred then bounced), and the two bounces
    # Haraka sent back to the sender, delivered too
    assert by_outcome == {"delivered": 5, "deferred": 2, "rejected": 2}
    logs = {r.event_name: r for _, r in rx.log_records() if r.event_name in ("haraka.deferred", "haraka.bounced")
            and attrs(r.attributes)["haraka.transaction.id"].startswith(relayed["transaction_id"] + ".")}
    assert logs["haraka.deferred"].severity_text == "WARN"
    assert logs["haraka.bounced"].body.string_value.startswith(f"REJECTED {relayed['transaction_id']}.1 to dest.test via ")


def test_relay_attempts_without_a_noted_message_id_follow_the_inbound_transaction(tmp_path):
    relayed = next(t for t in TRANSACTIONS.values() if t.get("message_id") == "<rec-relay@sender.test>")
    batches = copy.deepcopy(BATCHES)
    for b in batches:
        for e in b["events"]:
            if e["type"] == "haraka.delivery":
                e.pop("message_id", None)   # Haraka added the Message-ID at queueing: not in the notes
    rx, _ = run(tmp_path, batches)
    trace = ids.trace_id_for(relayed["message_id"], None)
    attempts = [s for s in spans(rx, "delivery") if attrs(s.attributes)["haraka.transaction.id"].startswith(relayed["transaction_id"])]
    assert attempts and all(s.trace_id == trace for s in attempts)


def test_harakas_log_lines_join_their_transactions_trace(tmp_path):
    rx, _ = run(tmp_path)
    lines = [(attrs(r.attributes), r) for _, r in rx.log_records() if r.event_name == "haraka.log"]
    assert len(lines) == sum(1 for e in EVENTS if e["type"] == "haraka.log")
    in_txn = [(a, r) for a, r in lines if a.get("haraka.transaction.id") in TRANSACTIONS]
    assert len(in_txn) > 10
    for a, r in in_txn:
        t = TRANSACTIONS[a["haraka.transaction.id"]]
        want = (ids.trace_id_for(t["message_id"], None) if "message_id" in t
                else ids.trace_id_from_key("qid:" + t["transaction_id"]))
        assert r.trace_id == want and r.span_id == ids.inbound_span_id(t["transaction_id"])
    levels = {r.severity_text: r.severity_number for _, r in lines}
    assert levels["INFO"] == 9 and levels["NOTICE"] == 10
    bodies = [r.body.string_value for _, r in lines]
    assert not any("@rcpt.test" in b and "***@rcpt.test" not in b for b in bodies), "addresses masked"
    assert not any(" ip=127.0.0.1" in b for b in bodies), "the client's address masked"
    connection_only = [(a, r) for a, r in lines if "haraka.connection.id" in a]
    assert connection_only and all(not r.trace_id for _, r in connection_only)


def test_a_line_whose_transaction_never_ends_goes_out_without_a_trace():
    holding = Holding(2.0, capacity=2)
    assert holding.hold("t1", "a", now_ns=1_000) and holding.hold("t1", "b") and not holding.hold("t2", "c")
    assert len(holding) == 2 and "t1" in holding
    assert holding.expire(now_ns=1_000 + 1_999_999_999) == []
    assert holding.expire(now_ns=1_000 + 2_000_000_000) == ["a", "b"]
    assert not holding and holding.resolve("t1") == []
    assert not Holding(0).hold("k", "x"), "holding off"


def test_refused_connection_and_refusal_metrics(tmp_path):
    rx, _ = run(tmp_path)
    [refusal] = [r for _, r in rx.log_records() if r.event_name == "haraka.refusal"]
    assert refusal.body.string_value.startswith("CONNECT refused ")
    assert refusal.body.string_value.endswith("by test_policy: 554 Listed in dnsbl.test")
    assert not refusal.trace_id
    assert total(rx, "mta.inbound.connections", **{"mta.inbound.outcome": "refused"}) == 1
    assert total(rx, "mta.inbound.connections", **{"mta.inbound.outcome": "accepted"}) == 3
    refusals = {(a["mta.inbound.stage"], a.get("mta.inbound.plugin"), a["mta.smtp.code"]): p.as_int
                for a, p in rx.last_points("mta.inbound.refusals")}
    assert refusals == {
        ("connect", "test_policy", 554): 1,
        ("rcpt", "test_policy", 550): 2,          # nobody@ twice
        ("rcpt", "test_policy", 450): 1,          # later@
        ("rcpt", None, 550): 1,                   # x@other.test: no plugin took it
        ("data_post", "test_policy", 550): 1,     # spam
        ("mail", "test_policy", 550): 1,          # blocked@
        ("queue", None, 451): 1,                  # no queue plugin
    }
    outcomes = {a["mta.inbound.outcome"]: p.as_int for a, p in rx.last_points("mta.inbound.transactions")}
    assert outcomes == {"accepted": 3, "refused": 3, "deferred": 1}
    sizes = {a["mta.inbound.outcome"]: p.count for a, p in rx.last_points("mta.inbound.message.size")}
    assert sizes == {"accepted": 3, "refused": 1, "deferred": 1}


def test_recipients_beyond_the_plugins_list_are_counted(tmp_path):
    batches = copy.deepcopy(BATCHES)
    ev = next(e for b in batches for e in b["events"] if e["type"] == "haraka.transaction" and e["outcome"] == "accepted")
    ev["recipients_omitted"] = {"accepted": 40, "refused": 2, "deferred": 0, "aborted": 1}
    rx, _ = run(tmp_path, batches)
    span = next(s for s in spans(rx, "inbound") if attrs(s.attributes)["haraka.transaction.id"] == ev["transaction_id"])
    assert attrs(span.attributes)["mta.recipient.count"] == 41
    assert total(rx, "mta.inbound.recipients", **{"mta.inbound.outcome": "aborted"}) == 1
    listed = sum(r["outcome"] == "accepted" for t in TRANSACTIONS.values() for r in t["recipients"])
    assert listed == 8
    assert total(rx, "mta.inbound.recipients", **{"mta.inbound.outcome": "accepted"}) == 40 + listed


@pytest.mark.parametrize("mode", ["full", "hmac", "drop"])
def test_privacy_modes(tmp_path, mode):
    rx, _ = run(tmp_path, settings_yaml=f"privacy: {{recipient: {mode}, sender: {mode}, client: {'drop' if mode == 'drop' else mode}, "
                                        f"user: drop, hmac_key: k}}\n")
    span = next(s for s in spans(rx, "inbound") if attrs(s.attributes).get("mta.message_id") == "rec-1@sender.test")
    a = attrs(span.attributes)
    rcpt_logs = [attrs(r.attributes) for _, r in rx.log_records() if r.event_name == "haraka.rcpt"]
    bodies = " ".join(r.body.string_value for _, r in rx.log_records())
    if mode == "full":
        assert a["mta.sender.address"] == "alice@sender.test" and a["mta.recipient.address"] == ["bob@rcpt.test"]
        assert a["mta.client.address"] == "127.0.0.1" and a["mta.client.helo"] == "inbound.client.test"
        assert any(r.get("mta.recipient.address") == "nobody@rcpt.test" for r in rcpt_logs)
        assert "nobody@rcpt.test" in bodies
    elif mode == "hmac":
        assert len(a["mta.sender.hash"]) == 32 and "mta.sender.address" not in a
        assert a["mta.recipient.domain"] == "rcpt.test" and len(a["mta.recipient.hash"]) == 1
        assert "mta.client.address_hash" in a and "mta.client.address" not in a
        assert "nobody@rcpt.test" not in bodies
    else:
        assert not any(k.startswith(("mta.sender", "mta.recipient.domain", "mta.recipient.address", "mta.client"))
                       for k in a)
        assert all("mta.recipient.domain" not in r for r in rcpt_logs)
        assert "nobody@rcpt.test" not in bodies and "rcpt.test:" not in bodies


def test_mask_client_and_transaction_of():
    assert mask_client('disconnect ip=192.0.2.7 rdns="mail.example.com" helo=mx.example.org relay=N local_ip=10.0.0.1') == \
        "disconnect ip=*** rdns=*** helo=*** relay=N local_ip=10.0.0.1"
    assert mask_client("Listed in zen for 198.51.100.77, also 2001:db8::1:2 and ::ffff:192.0.2.1") == \
        "Listed in zen for ***, also *** and ***"
    assert mask_client("version 3.3.4 at 12:30:01") == "version 3.3.4 at 12:30:01"
    assert mask_client("Listening on 127.0.0.1:2525, [::1]:25") == "Listening on ***:2525, [***]:25"
    assert transaction_of("5B6F1C2A-0E55-4E0C-9D0C-3C9C4B2A1F00.1.2") == "5B6F1C2A-0E55-4E0C-9D0C-3C9C4B2A1F00.1"
    assert transaction_of("5B6F1C2A-0E55-4E0C-9D0C-3C9C4B2A1F00.1") == "5B6F1C2A-0E55-4E0C-9D0C-3C9C4B2A1F00.1"
