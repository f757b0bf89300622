"""Haraka as a relay: a message Haraka queued in its own outbound queue ends its
trace with a `message.final` span once its last recipient is delivered or
bounced — its final state, time in queue and recipients by outcome — as a
deferred ZoneMTA message does, through the same bounded table
(signals/final.py). Fed with the events a real Haraka 3.3.4 sent
(tests/fixtures/haraka/batches.json, haraka-plugin/test/record.js): one message
with a recipient delivered, one bounced and one greylisted then delivered on
the retry; one to two domains, one recipient delivered and one deferred until
Haraka gave up and bounced it."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from otel_mta import config, ids
from otel_mta.pipeline import Pipeline
from otel_mta.signals.inbound import transaction_of
from otel_mta.sources.events_ingest import Ingest
from tests.otlp_receiver import REQUEST, Received, attrs

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "haraka" / "batches.json"
BATCHES = json.loads(FIXTURE.read_text())
EVENTS = [e for b in BATCHES for e in b["events"]]
TXN = {e["message_id"]: e for e in EVENTS if e["type"] == "haraka.transaction" and "message_id" in e}
RELAY, RELAY2 = TXN["<rec-relay@sender.test>"], TXN["<rec-relay-2@sender.test>"]
MS = 1_000_000


def deliveries(txn: dict) -> list[dict]:
    return [e for e in EVENTS if e["type"] == "haraka.delivery" and transaction_of(e["transaction_id"]) ==
            txn["transaction_id"]]


def make(env: dict | None = None):
    rx = Received()
    settings = config.load(environ={"OTEL_MTA_DATA_DIR": "/nonexistent", **(env or {})})
    p = Pipeline(settings, lambda sig, payload, n: rx.add(sig, REQUEST[sig].FromString(payload)))
    return p, Ingest(p), rx


def feed(ingest, events, batches=BATCHES):
    """`events` (a subset of the recording, in its order) in batches as the plugin sent them."""
    wanted = {e["id"] for e in events}
    for b in batches:
        part = [e for e in b["events"] if e["id"] in wanted]
        if part:
            result = ingest.batch({**copy.deepcopy(b), "events": copy.deepcopy(part)})
            assert not result.rejected


def finish(p, rx):
    p.tick(flush_all=True)
    p.flush()
    payload, _ = p.metrics.collect()
    rx.add("metrics", REQUEST["metrics"].FromString(payload))


def finals(rx):
    return {attrs(s.attributes)["haraka.transaction.id"]: (res, s) for res, s in rx.spans()
            if s.name == "message.final"}


def test_the_recorded_relay_sends_are_what_the_tests_below_assume():
    assert RELAY["outbound_queue"] is True and RELAY2["outbound_queue"] is True
    assert all("outbound_queue" not in t for t in TXN.values() if t not in (RELAY, RELAY2)), \
        "queue/discard and no queue at all are not Haraka's outbound"
    outcomes = [(e["outcome"], [r["address"] for r in e["recipients"]]) for e in deliveries(RELAY)]
    assert sorted(outcomes) == [("bounced", ["gone@dest.test"]), ("deferred", ["grey@dest.test"]),
                                ("delivered", ["bob@dest.test"]), ("delivered", ["grey@dest.test"])]
    assert outcomes[-1] == ("delivered", ["grey@dest.test"]), "grey's delivery on the retry comes last"
    assert sorted(e["outcome"] for e in deliveries(RELAY2)) == ["bounced", "deferred", "delivered"]


def test_a_relayed_message_deferred_then_delivered_ends_with_message_final():
    p, ingest, rx = make()
    feed(ingest, EVENTS)
    finish(p, rx)
    tid = RELAY["transaction_id"]
    res, final = finals(rx)[tid]
    inbound = next(s for _, s in rx.spans() if s.name == "inbound" and s.span_id == ids.inbound_span_id(tid))
    last = deliveries(RELAY)[-1]
    # in the message's trace, child of the inbound SERVER span, Haraka's resource
    assert res["service.name"] == "haraka"
    assert final.trace_id == inbound.trace_id == ids.trace_id_for(RELAY["message_id"], None)
    assert final.parent_span_id == inbound.span_id
    assert final.span_id == ids.final_span_id(tid)
    assert final.kind == final.SPAN_KIND_INTERNAL
    # from queueing (the transaction's end: queue_ok) to the last recipient's outcome (grey, on the retry)
    assert final.start_time_unix_nano == RELAY["time_ms"] * MS == inbound.end_time_unix_nano
    assert final.end_time_unix_nano == last["time_ms"] * MS
    assert attrs(final.attributes) == {
        "haraka.transaction.id": tid, "mta.message.state": "partially_delivered", "mta.recipient.count": 3,
        "mta.message.time_in_queue_ms": last["time_ms"] - RELAY["time_ms"],
        "mta.recipients.delivered": 2, "mta.recipients.rejected": 1, "mta.recipients.dropped": 0}
    assert last["time_ms"] - RELAY["time_ms"] >= 4000, "the retry came after Haraka's 5 s interval"
    assert final.status.code == final.status.STATUS_CODE_ERROR
    assert final.status.message == "one or more recipients rejected"


def test_a_message_to_two_domains_deferred_until_haraka_bounced_it():
    p, ingest, rx = make()
    feed(ingest, EVENTS)
    finish(p, rx)
    tid = RELAY2["transaction_id"]
    _, final = finals(rx)[tid]
    entries = {e["transaction_id"] for e in deliveries(RELAY2)}
    assert entries == {tid + ".1", tid + ".2"}, "one queue entry per destination domain"
    a = attrs(final.attributes)
    assert (a["mta.message.state"], a["mta.recipient.count"]) == ("partially_delivered", 2)
    assert (a["mta.recipients.delivered"], a["mta.recipients.rejected"]) == (1, 1)
    bounced = next(e for e in deliveries(RELAY2) if e["outcome"] == "bounced")
    assert final.end_time_unix_nano == bounced["time_ms"] * MS
    assert final.trace_id == ids.trace_id_for(RELAY2["message_id"], None)


def test_only_messages_in_harakas_outbound_queue_and_the_metric():
    p, ingest, rx = make()
    feed(ingest, EVENTS)
    finish(p, rx)
    # not the message queue/discard took, nor the bounces Haraka generated (no inbound transaction)
    assert set(finals(rx)) == {RELAY["transaction_id"], RELAY2["transaction_id"]}
    assert len(p.queued_messages) == 0, "both forgotten once final"
    [(res, metric)] = [m for m in rx.metrics()["mta.message.time_in_queue"]]
    assert res["service.name"] == "haraka"
    points = {attrs(pt.attributes)["mta.message.state"]: pt for pt in metric.histogram.data_points}
    assert set(points) == {"partially_delivered"} and points["partially_delivered"].count == 2
    want = sum(deliveries(t)[-1]["time_ms"] - t["time_ms"] for t in (RELAY, RELAY2)) / 1000
    assert points["partially_delivered"].sum == pytest.approx(want)


def test_nothing_before_the_last_recipient_and_the_table_holds_it_meanwhile():
    p, ingest, rx = make()
    last = deliveries(RELAY)[-1]
    before = EVENTS[:EVENTS.index(last)]
    feed(ingest, before)
    p.flush()
    assert RELAY["transaction_id"] not in finals(rx)
    assert RELAY["transaction_id"] in p.queued_messages
    assert p.tracker.queued_messages is p.inbound.finals.table is p.queued_messages, "one table for both MTAs"
    feed(ingest, [last])
    p.flush()
    assert RELAY["transaction_id"] in finals(rx)


def test_a_batch_sent_twice_counts_once():
    """The plugin retries a batch whose answer it did not get: event ids drop the repeat."""
    p, ingest, rx = make()
    feed(ingest, EVENTS)
    feed(ingest, EVENTS)
    finish(p, rx)
    assert [s.name for _, s in rx.spans()].count("message.final") == 2


def test_after_a_restart_an_unknown_message_gets_no_message_final():
    """A sidecar started after Haraka queued the message knows neither its
    recipients nor its queueing time: the attempts still join the trace."""
    p, ingest, rx = make()
    feed(ingest, deliveries(RELAY) + deliveries(RELAY2))
    finish(p, rx)
    assert finals(rx) == {}
    attempts = [s for _, s in rx.spans() if s.name == "delivery"]
    assert len(attempts) == 7 and len({s.span_id for s in attempts}) == 7
    assert len(p.queued_messages) == 0 and "mta.message.time_in_queue" not in rx.metrics()


def test_recipients_beyond_the_plugins_list_are_counted():
    """The plugin lists up to max_recipients and counts the rest (recipients_omitted)."""
    batches = copy.deepcopy(BATCHES)
    for b in batches:
        for e in b["events"]:
            if e["id"] == RELAY2["id"]:
                e["recipients_omitted"] = {"accepted": 30, "refused": 0, "deferred": 0, "aborted": 0}
            elif e["type"] == "haraka.delivery" and e["transaction_id"] == RELAY2["transaction_id"] + ".1" \
                    and e["outcome"] == "delivered":
                e["recipients_omitted"] = 30
    p, ingest, rx = make()
    feed(ingest, EVENTS, batches)
    finish(p, rx)
    a = attrs(finals(rx)[RELAY2["transaction_id"]][1].attributes)
    assert (a["mta.recipient.count"], a["mta.recipients.delivered"], a["mta.recipients.rejected"]) == (32, 31, 1)


def test_the_shared_table_is_bounded_oldest_first_and_counted():
    p, ingest, rx = make()
    p.queued_messages.capacity = 100    # correlation.max_queued_messages (at least 100)
    # 100 ZoneMTA messages deferred after Haraka queued its two: Haraka's, the oldest, are forgotten
    feed(ingest, [e for e in EVENTS if e["type"] != "haraka.delivery"])
    for n in range(100):
        qid = f"18c5f3d2a3f{n:07x}"
        p.tracker.queued(qid, ids.trace_id_for(None, qid), 0, {}, 1)
        p.tracker.deferred(qid, 1)
    feed(ingest, [e for e in EVENTS if e["type"] == "haraka.delivery"])
    finish(p, rx)
    assert finals(rx) == {}
    assert p.queued_messages.evicted == 2 and len(p.queued_messages) == 100
    [(_, evicted)] = rx.last_points("otelmta_tracker_evicted_messages")
    assert evicted.as_int == 2
