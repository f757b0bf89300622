"""A message whose root span ended before its outcome (a deferral) still ends its
trace with a message-level `message.final` span: final state, time in queue,
recipients by outcome. Fed with bytes from ZoneMTA's real encoder (msgpack-js)
and with the plugin's events; arrival times come from a test clock, so a
deferral can last days."""
from __future__ import annotations

import hashlib
import tracemalloc

import pytest

from otel_mta import ids
from otel_mta.config import load as load_settings
from otel_mta.signals.final import QueuedMessages
from otel_mta.sources import remote_log
from otel_mta.sources.events_ingest import Ingest
from otel_mta.sources.remote_log import RemoteLogSource
from tests.otlp_receiver import REQUEST, attrs

T0 = 1_795_714_620_000_000_000           # ns; arrival of QUEUED
S, MIN, DAY = 10**9, 60 * 10**9, 86_400 * 10**9
U = "__undefined__"


def queued(qid: str, to: str, mid: str | None = None) -> dict:
    return {"id": qid, "action": "QUEUED", "message-id": f"<{mid or qid}@mail.example.org>",
            "from": "alice@example.org", "to": to, "src": "203.0.113.9", "subject": "Report",
            "body": 20480, "interface": "feeder", "transtype": "ESMTPSA"}


def attempt(qid: str, seq: str, action: str, to: str, mid: str | None = None, **extra) -> dict:
    dom = to.split("@")[1]
    e = {"id": qid, "seq": seq, "action": action, "zone": "default", "from": "alice@example.org",
         "returnPath": "alice@example.org", "to": to, "mx": f"mx.{dom}", "host": "198.51.100.7", "ip": "10.0.0.5",
         "size": 21312, "timer": 120, "start": 20, "messageId": f"<{mid or qid}@mail.example.org>",
         "secure": True, "tls": True, "tlsVersion": "TLSv1.3", "tlsCipher": U, "tlsAuthorized": True,
         "tlsAuthorizationError": U, "protocol": "smtp", "httpUrl": U, "httpResponse": U}
    if action == "ACCEPTED":
        e["response"] = "250 2.0.0 OK queued"
    elif action == "DEFERRED":
        e.update(category="greylist", response="451 4.7.1 Greylisted, please try again later",
                 nextattempt=1795714920123)
    elif action == "REJECTED":
        e.update(category="recipient", response=f"550 5.1.1 <{to}>: Recipient address rejected: User unknown")
    e.update(extra)
    return e


class Clock:
    """Stands in for the `time` module of sources/remote_log.py: the arrival times."""

    def __init__(self, now: int):
        self.now = now

    def time_ns(self) -> int:
        return self.now


@pytest.fixture
def feed(capture, js_encode, monkeypatch):
    """feed([(arrival ns, entry), ...]) -> (pipeline, received); entries encoded by msgpack-js."""
    make, rx = capture

    def run(timed, pipeline=None, env=None):
        p = pipeline or make(env)
        src = RemoteLogSource(p, load_settings(environ={}).sources.remote_log)
        clock = Clock(T0)
        monkeypatch.setattr(remote_log, "time", clock)
        for (at, _), data in zip(timed, js_encode([e for _, e in timed])):
            clock.now = at
            src.handle_datagram(data)
            p.mail.tick(at)  # the sidecar ticks every second: a deferral outlives root_hold
        p.flush()
        return p, rx

    return run


def collect_metrics(p, rx):
    payload, _ = p.metrics.collect()
    rx.add("metrics", REQUEST["metrics"].FromString(payload))


def trace_of(rx, qid, mid=None):
    trace = ids.trace_id_for(f"<{mid or qid}@mail.example.org>", None)
    return [s for _, s in rx.spans() if s.trace_id == trace]   # in the order they were emitted


def test_one_recipient_queued_deferred_then_accepted_days_later(feed):
    q = "18c5f3d2a3e0000001"
    p, rx = feed([(T0, queued(q, "bob@example.net")),
                  (T0 + 2 * S, attempt(q, "001", "DEFERRED", "bob@example.net", defcount=1)),
                  (T0 + 2 * DAY, attempt(q, "001", "ACCEPTED", "bob@example.net"))])
    spans = trace_of(rx, q)
    assert [s.name for s in spans] == ["delivery", "message", "delivery", "message.final"]
    root, final = spans[1], spans[-1]
    # the root ended at the first deferral, as queued
    assert attrs(root.attributes)["mta.message.state"] == "queued"
    assert root.end_time_unix_nano == T0 + 2 * S
    # the trace ends with the message's outcome, child of the root
    assert final.parent_span_id == root.span_id == ids.root_span_id(q)
    assert final.span_id == ids.final_span_id(q) == hashlib.sha256(f"final:{q}".encode()).digest()[:8]
    assert final.kind == final.SPAN_KIND_INTERNAL and final.status.code == 0
    assert (final.start_time_unix_nano, final.end_time_unix_nano) == (T0, T0 + 2 * DAY)
    a = attrs(final.attributes)
    assert a == {"mta.queue_id": q, "mta.message.state": "delivered", "mta.recipient.count": 1,
                 "mta.message.time_in_queue_ms": 2 * 86_400_000, "mta.recipients.delivered": 1,
                 "mta.recipients.rejected": 0, "mta.recipients.dropped": 0}
    collect_metrics(p, rx)
    [(labels, point)] = rx.last_points("mta.message.time_in_queue")
    assert labels == {"mta.message.state": "delivered"}
    assert point.count == 1 and point.sum == 2 * 86_400.0
    assert len(p.tracker.queued_messages) == 0  # forgotten once final


@pytest.mark.parametrize("first,state,counts", [
    ("ACCEPTED", "partially_delivered", (1, 1, 0)),
    ("REJECTED", "bounced", (0, 2, 0)),
])
def test_two_recipients_one_deferred_then_bounced(feed, first, state, counts):
    q = "18c5f3d2a3e0000002"
    p, rx = feed([(T0, queued(q, "bob@example.com,carol@example.net")),
                  (T0 + 1 * S, attempt(q, "001", first, "bob@example.com")),
                  (T0 + 2 * S, attempt(q, "002", "DEFERRED", "carol@example.net", defcount=1)),
                  (T0 + 17 * MIN, attempt(q, "002", "DEFERRED", "carol@example.net", defcount=2)),
                  (T0 + 3 * DAY, attempt(q, "002", "REJECTED", "carol@example.net"))])
    spans = trace_of(rx, q)
    assert [s.name for s in spans] == ["delivery", "delivery", "message", "delivery", "delivery", "message.final"]
    root, final = spans[2], spans[-1]
    assert attrs(root.attributes)["mta.message.state"] == "queued" and root.status.code == 0
    assert final.parent_span_id == root.span_id
    a = attrs(final.attributes)
    assert a["mta.message.state"] == state
    assert a["mta.message.time_in_queue_ms"] == 3 * 86_400_000
    assert (a["mta.recipients.delivered"], a["mta.recipients.rejected"], a["mta.recipients.dropped"]) == counts
    assert a["mta.recipient.count"] == 2
    assert final.status.code == final.status.STATUS_CODE_ERROR
    assert final.status.message == "one or more recipients rejected"


def test_a_message_without_deferral_gets_no_message_final_but_is_timed(feed):
    q = "18c5f3d2a3e0000003"
    p, rx = feed([(T0, queued(q, "bob@example.com")), (T0 + 3 * S, attempt(q, "001", "ACCEPTED", "bob@example.com"))])
    assert [s.name for s in trace_of(rx, q)] == ["delivery", "message"]
    collect_metrics(p, rx)
    [(labels, point)] = rx.last_points("mta.message.time_in_queue")
    assert labels == {"mta.message.state": "delivered"} and point.sum == 3.0


def test_a_root_ended_by_the_hold_time_still_gets_its_outcome(feed):
    """No deferral entry at all (e.g. lost): root_hold (10 min) ends the root as queued."""
    q = "18c5f3d2a3e0000004"
    p, rx = feed([(T0, queued(q, "bob@example.com")),
                  (T0 + 11 * MIN, {"id": "18c5f3d2a3e00000ff", "action": "QUEUE_POLL"}),   # a tick passes
                  (T0 + 5 * 60 * MIN, attempt(q, "001", "REJECTED", "bob@example.com"))])
    spans = trace_of(rx, q)
    assert [s.name for s in spans] == ["message", "delivery", "message.final"]   # in the order emitted
    assert spans[0].end_time_unix_nano == T0 + 10 * MIN
    a = attrs(spans[-1].attributes)
    assert a["mta.message.state"] == "bounced" and a["mta.message.time_in_queue_ms"] == 5 * 3_600_000


def test_a_whole_message_deleted_while_deferred_ends_as_dropped(feed):
    """ZoneMTA's DELETED without seq ("Not found from GridStore"): every recipient left is gone."""
    q = "18c5f3d2a3e0000005"
    p, rx = feed([(T0, queued(q, "a@example.com,b@example.net,c@example.org")),
                  (T0 + 1 * S, attempt(q, "001", "ACCEPTED", "a@example.com")),
                  (T0 + 2 * S, attempt(q, "002", "DEFERRED", "b@example.net", defcount=1)),
                  (T0 + 1 * DAY, {"id": q, "action": "DELETED", "reason": "Not found from GridStore"})])
    a = attrs(trace_of(rx, q)[-1].attributes)
    assert a["mta.message.state"] == "partially_delivered"
    assert (a["mta.recipients.delivered"], a["mta.recipients.rejected"], a["mta.recipients.dropped"]) == (1, 0, 2)


def test_after_a_restart_an_unknown_message_gets_no_message_final(feed):
    """The table lives in memory: a sidecar started after QUEUED knows neither the
    recipients nor the QUEUED time. The attempt still joins the trace under the root's id."""
    q = "18c5f3d2a3e0000006"
    p, rx = feed([(T0 + DAY, attempt(q, "001", "ACCEPTED", "bob@example.com"))])
    [span] = trace_of(rx, q)
    assert span.name == "delivery" and span.parent_span_id == ids.root_span_id(q)
    collect_metrics(p, rx)
    assert rx.last_points("mta.message.time_in_queue") == []


def test_plugin_events_reach_the_same_message_final(capture):
    """Remote log off, the plugin on: QUEUED and DEFERRED as log.entry, the outcome
    as queue.release (and queue.bounce); a repeated outcome counts once."""
    make, rx = capture
    p = make()
    ms = T0 // 10**6
    q = "18c5f3d2a3e0000007"
    to = "bob@example.com,carol@example.net"

    def ev(n, type_, time_ms, **fields):
        return {"id": f"t.{n}", "type": type_, "time_ms": time_ms, **fields}

    def clean(e):
        return {k: v for k, v in e.items() if v != U}

    source = {"service": "zonemta", "instance": "mta-0", "pid": 1, "context": "main", "plugin_version": "0.1.0"}
    Ingest(p).batch({"schema": "otel-mta.events/v1", "source": source, "events": [
        ev(1, "log.entry", ms, entry=clean(queued(q, to))),
        ev(2, "log.entry", ms + 1000, entry=clean(attempt(q, "001", "DEFERRED", "bob@example.com", defcount=1))),
        ev(3, "queue.release", ms + 2000, queue_id=q, seq="002", zone="default", status="delivered"),
        ev(4, "queue.release", ms + 2500, queue_id=q, seq="002", zone="default", status="delivered"),  # again
        ev(5, "queue.bounce", ms + 3_600_000, queue_id=q, seq="001", zone="default", category="recipient"),
    ]})
    p.flush()
    spans = trace_of(rx, q)
    final = spans[-1]
    assert final.name == "message.final" and final.parent_span_id == ids.root_span_id(q)
    a = attrs(final.attributes)
    assert a["mta.message.state"] == "partially_delivered" and a["mta.message.time_in_queue_ms"] == 3_600_000
    assert (a["mta.recipients.delivered"], a["mta.recipients.rejected"]) == (1, 1)
    assert final.status.code == final.status.STATUS_CODE_ERROR


# -- the bound -------------------------------------------------------------------------
def test_the_table_is_bounded_counted_and_drops_the_oldest_first(feed, capture):
    make, _ = capture
    p = make()
    p.tracker.queued_messages.capacity = 100
    timed = []
    for n in range(103):   # 103 messages deferred at their first attempt
        q = f"18c5f3d2a3f{n:07x}"
        timed += [(T0 + n * S, queued(q, "bob@example.com")),
                  (T0 + n * S + 1, attempt(q, "001", "DEFERRED", "bob@example.com", defcount=1))]
    # the outcomes a day later: of the first three (forgotten) and of the newest
    late = [(T0 + DAY + n, attempt(f"18c5f3d2a3f{n:07x}", "001", "ACCEPTED", "bob@example.com"))
            for n in (0, 1, 2, 3, 102)]
    p, rx = feed(timed + late, pipeline=p)
    finals = {attrs(s.attributes)["mta.queue_id"] for _, s in rx.spans() if s.name == "message.final"}
    assert finals == {"18c5f3d2a3f0000003", "18c5f3d2a3f0000066"}
    assert p.tracker.queued_messages.evicted == 3
    assert len(p.tracker.queued_messages) == 98
    collect_metrics(p, rx)
    assert [pt.as_int for _, pt in rx.last_points("otelmta_tracker_evicted_messages")] == [3]
    assert [pt.as_int for _, pt in rx.last_points("otelmta_tracker_queued_messages")] == [98]


def test_the_tables_size_is_configured():
    assert load_settings(environ={}).correlation.max_queued_messages == 100_000


@pytest.mark.parametrize("recipients,bound", [(1, 220), (3, 220), (64, 230)])
def test_memory_per_deferred_message(recipients, bound):
    """What docs/remote-log.md states: bytes per remembered message, table and keys included."""
    n = 20_000
    qids = [f"18c{i:015x}" for i in range(n)]      # ZoneMTA's queue ids: 18 hex digits
    trace = bytes(range(16))
    outcomes = {"001": "delivered"} if recipients > 1 else None
    table = QueuedMessages(n)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i, q in enumerate(qids):
        table.add(q, trace, T0 + i, recipients, outcomes)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    per_message = (sum(s.size_diff for s in after.compare_to(before, "filename")) + sum(map(len, qids)) + 49 * n) / n
    print(f"{recipients} recipient(s): {per_message:.0f} bytes per deferred message")
    assert per_message <= bound
