"""What the plugin's events become: the same logs, spans and metrics as the
remote log for the same ZoneMTA entries, phase child spans, root-span
finality, and the plugin's health — through an in-process pipeline."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from otel_mta import ids
from otel_mta.config import load as load_settings
from otel_mta.sources import events_ingest
from otel_mta.sources.events_ingest import Ingest
from otel_mta.sources.remote_log import RemoteLogSource
from tests.otlp_receiver import REQUEST, attrs

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "remote_log"
ENTRIES = [json.loads(line) for line in (FIXTURES / "entries.jsonl").read_text().splitlines()]
Q = "18c5f3d2a3e0001234"
MID = "20261126173700.4f2a@mail.example.org"
TRACE = ids.trace_id_for(MID, None)
SOURCE = {"service": "zonemta", "instance": "mta-0", "pid": 4711, "context": "sender", "plugin_version": "0.1.0"}
T0 = 1_795_714_620_000
_ids = iter(range(10**9))


def as_json(entry: dict) -> dict:
    """The entry as the plugin sends it: JSON.stringify leaves out undefined values."""
    return {k: v for k, v in entry.items() if v != "__undefined__"}


def ev(type_: str, time_ms: int = T0, **fields) -> dict:
    return {"id": f"test.{next(_ids)}", "type": type_, "time_ms": time_ms, **fields}


def log_entry(entry: dict, time_ms: int = T0) -> dict:
    return ev("log.entry", time_ms, entry=as_json(entry))


def batch(*events, source=SOURCE) -> dict:
    return {"schema": "otel-mta.events/v1", "source": source, "events": list(events)}


def collect(pipeline, rx, tick=True):
    if tick:
        pipeline.mail.tick(flush_all=True)
    pipeline.flush()
    payload, _ = pipeline.metrics.collect()
    rx.add("metrics", REQUEST["metrics"].FromString(payload))
    return rx


def attempts(rx):
    return [p for p in rx.last_points("mta.delivery.attempts")]


# -- one internal event model ------------------------------------------------------
def _signature(rx):
    """Everything but arrival times: what a backend would store."""
    logs = sorted((r.body.string_value, r.severity_number, r.trace_id, r.span_id, r.event_name,
                   json.dumps(_same_numbers(attrs(r.attributes)), sort_keys=True)) for _, r in rx.log_records())
    # a delivery span's length is ZoneMTA's timer; a root's is the time between arrivals
    spans = sorted((s.name, s.trace_id, s.span_id, s.parent_span_id, s.kind, s.status.code,
                    s.end_time_unix_nano - s.start_time_unix_nano if s.name == "delivery" else None,
                    json.dumps(attrs(s.attributes), sort_keys=True)) for _, s in rx.spans())
    metrics = {}
    for name in ("mta.delivery.attempts", "mta.message.queued", "mta.delivery.duration", "mta.message.size",
                 "mta.bounce.generated", "mta.message.checks", "mta.delivery.dropped", "mta.delivery.deleted"):
        metrics[name] = sorted((json.dumps(a, sort_keys=True), _value(pt)) for a, pt in rx.last_points(name))
    return logs, spans, metrics


def _same_numbers(a: dict) -> dict:
    """JavaScript has one number type: msgpack-js sends integers above 2^32 as
    float64 (1764178620123.0), JSON as written (1764178620123). Both are the
    same JS number; only the unmapped entry text (`mta.entry`) shows it."""
    if "mta.entry" in a:
        def norm(v):
            if isinstance(v, float) and v.is_integer():
                return int(v)
            if isinstance(v, dict):
                return {k: norm(x) for k, x in v.items()}
            if isinstance(v, list):
                return [norm(x) for x in v]
            return v
        a["mta.entry"] = json.dumps(norm(json.loads(a["mta.entry"])), sort_keys=True)
    return a


def _value(point):
    if hasattr(point, "bucket_counts"):
        return (point.count, point.sum, tuple(point.bucket_counts))
    return point.as_int


def new_pipeline(channels: int = 1):
    """A Pipeline whose exports land in its own Received."""
    from otel_mta.pipeline import Pipeline
    from tests.otlp_receiver import Received
    rx = Received()
    settings = load_settings(environ={"OTEL_MTA_DATA_DIR": "/nonexistent"})
    return Pipeline(settings, lambda s, b, n: rx.add(s, REQUEST[s].FromString(b)), channels), rx


def test_log_entries_map_exactly_like_remote_log_datagrams(js_encode):
    p_udp, rx_udp = new_pipeline()
    src = RemoteLogSource(p_udp, load_settings(environ={}).sources.remote_log)
    for d in js_encode(ENTRIES):
        src.handle_datagram(d)
    collect(p_udp, rx_udp)

    p_ev, rx_ev = new_pipeline()
    result = Ingest(p_ev).batch(batch(*[log_entry(e) for e in ENTRIES]))
    assert (result.accepted, result.rejected) == (len(ENTRIES), 0)
    collect(p_ev, rx_ev)

    udp, events = _signature(rx_udp), _signature(rx_ev)
    assert events[0] == udp[0], "log records differ"
    assert events[1] == udp[1], "spans differ"
    assert events[2] == udp[2], "metrics differ"
    assert len(events[0]) == len(ENTRIES)
    # the event's time_ms is when the hook ran: the log record's time
    assert {r.time_unix_nano for _, r in rx_ev.log_records()} == {T0 * 1_000_000}
    received = {a["receiver"]: p.as_int for a, p in rx_ev.last_points("otelmta_receiver_accepted_records")}
    assert received == {"events": len(ENTRIES)}


def test_both_channels_on_nothing_is_counted_twice(capture, js_encode):
    make, rx = capture
    p = make(channels=2)
    udp = RemoteLogSource(p, load_settings(environ={}).sources.remote_log)
    ingest = Ingest(p)
    # the remote log first for half of them, the plugin first for the other half
    half = len(ENTRIES) // 2
    for d in js_encode(ENTRIES[:half]):
        udp.handle_datagram(d)
    ingest.batch(batch(*[log_entry(e) for e in ENTRIES]))
    for d in js_encode(ENTRIES[half:]):
        udp.handle_datagram(d)
    collect(p, rx)
    assert len(rx.log_records()) == len(ENTRIES)
    delivery_spans = [s.span_id for _, s in rx.spans() if s.name == "delivery"]
    assert len(delivery_spans) == len(set(delivery_spans)) == 4
    assert sum(pt.as_int for _, pt in attempts(rx)) == 4
    assert sum(pt.as_int for _, pt in rx.last_points("mta.message.queued")) == 2
    dups = {a["receiver"]: pt.as_int for a, pt in rx.last_points("otelmta_receiver_deduplicated_records")
            if a["reason"] == "duplicate"}
    assert dups == {"events": half, "remote_log": len(ENTRIES) - half}


# -- delivery phases ------------------------------------------------------------------
ACCEPTED = next(e for e in ENTRIES if e["action"] == "ACCEPTED")
DEFERRED = next(e for e in ENTRIES if e["action"] == "DEFERRED")


def phases_event(entry, phases, attempt_start_ms=None, defcount=0, time_ms=T0 + 500):
    fields = dict(queue_id=entry["id"], seq=entry["seq"], action=entry["action"], defcount=defcount, phases=phases)
    if attempt_start_ms is not None:
        fields["attempt_start_ms"] = attempt_start_ms
    return ev("delivery.phases", time_ms, **fields)


CONNECT = {"name": "connect", "start_ms": T0 + 10, "end_ms": T0 + 90,
           "attributes": {"server.address": "mx1.example.com", "server.port": 25,
                          "network.peer.address": "192.0.2.10", "network.local.address": "10.0.0.5",
                          "mta.connect.tries": 1, "mta.connect.addresses": 1.0, "mta.connection.reused": False,
                          "tls.established": True, "x.not.documented": "dropped", "mta.smtp.data_ms": "12"}}
SMTP = {"name": "smtp", "start_ms": T0 + 90, "end_ms": T0 + 400,
        "attributes": {"mta.smtp.envelope_ms": 12, "mta.smtp.data_ms": 40}}


def test_phases_after_the_entry_become_children_of_the_attempt_span(capture, js_encode):
    make, rx = capture
    p = make()
    src = RemoteLogSource(p, load_settings(environ={}).sources.remote_log)
    for d in js_encode([ENTRIES[0], ACCEPTED]):
        src.handle_datagram(d)
    r = Ingest(p).batch(batch(phases_event(ACCEPTED, [CONNECT, SMTP])))
    assert r.accepted == 1
    # the span went out before any plugin had reported, so nothing noted it:
    # the phases wait the hold time for an entry, then join by their derived ids
    collect(p, rx, tick=True)
    attempt = ids.attempt_span_id(Q, "001", "ACCEPTED", 0)
    children = {s.name: s for _, s in rx.spans() if s.parent_span_id == attempt}
    assert set(children) == {"connect", "smtp"}
    connect, smtp = children["connect"], children["smtp"]
    assert connect.trace_id == smtp.trace_id == TRACE
    assert connect.span_id == ids.phase_span_id(attempt, "connect")
    assert smtp.span_id == ids.phase_span_id(attempt, "smtp")
    assert connect.start_time_unix_nano == (T0 + 10) * 1_000_000
    assert connect.end_time_unix_nano == (T0 + 90) * 1_000_000
    assert attrs(connect.attributes) == {
        "mta.phase": "connect", "mta.queue_id": Q, "mta.delivery.seq": "001",
        "server.address": "mx1.example.com", "server.port": 25, "network.peer.address": "192.0.2.10",
        "network.local.address": "10.0.0.5", "mta.connect.tries": 1, "mta.connect.addresses": 1,
        "mta.connection.reused": False, "tls.established": True}
    assert attrs(smtp.attributes)["mta.smtp.data_ms"] == 40
    assert connect.status.code == smtp.status.code == 0


def test_phases_before_the_entry_give_the_attempt_span_the_plugins_timing(capture, js_encode):
    """A DEFERRED whose connection failed has no timer: the remote log alone gives a
    zero-length span. With the plugin's phases in the same batch it spans the attempt."""
    make, rx = capture
    p = make()
    failed = {"name": "connect", "start_ms": T0 + 20, "end_ms": T0 + 5020, "error": "ECONNREFUSED",
              "attributes": {"mta.connect.tries": 2}}
    done = T0 + 5030
    b = batch(log_entry(ENTRIES[0], T0), log_entry(DEFERRED, done),
              phases_event(DEFERRED, [failed], attempt_start_ms=T0 + 5, defcount=1, time_ms=done))
    assert Ingest(p).batch(b).accepted == 3
    collect(p, rx, tick=False)
    attempt_id = ids.attempt_span_id(Q, "002", "DEFERRED", 1)
    [attempt] = [s for _, s in rx.spans() if s.span_id == attempt_id]
    assert attempt.start_time_unix_nano == (T0 + 5) * 1_000_000
    assert attempt.end_time_unix_nano == done * 1_000_000
    [child] = [s for _, s in rx.spans() if s.parent_span_id == attempt_id]
    assert child.name == "connect" and child.trace_id == attempt.trace_id == TRACE
    assert child.status.code == child.status.STATUS_CODE_ERROR and child.status.message == "ECONNREFUSED"
    assert attrs(child.attributes)["error.type"] == "ECONNREFUSED"
    assert attempt.start_time_unix_nano <= child.start_time_unix_nano
    assert child.end_time_unix_nano <= attempt.end_time_unix_nano


def test_the_attempt_span_names_the_mx_port_only_when_the_plugin_saw_it(capture, js_encode):
    """ZoneMTA's remote log does not say which port it connected to (25, 587,
    465 or a relay's own): server.port comes only from the plugin's connect
    phase, here a submission port, never assumed."""
    make, rx = capture
    p = make()
    on_587 = {**CONNECT, "attributes": {**CONNECT["attributes"], "server.port": 587}}
    b = batch(log_entry(ENTRIES[0], T0), phases_event(ACCEPTED, [on_587, SMTP]), log_entry(ACCEPTED, T0 + 400))
    assert Ingest(p).batch(b).accepted == 3
    collect(p, rx, tick=True)
    [attempt] = [s for _, s in rx.spans() if s.name == "delivery"]
    assert attrs(attempt.attributes)["server.port"] == 587
    assert attrs(attempt.attributes)["server.address"] == "mx1.example.com"
    # the remote log alone: the MX is known, its port is not
    before = len(rx.spans())
    p2 = make()
    src = RemoteLogSource(p2, load_settings(environ={}).sources.remote_log)
    for d in js_encode([ENTRIES[0], ACCEPTED]):
        src.handle_datagram(d)
    p2.flush()
    [alone] = [s for _, s in rx.spans()[before:] if s.name == "delivery"]
    assert "server.port" not in attrs(alone.attributes)
    assert attrs(alone.attributes)["server.address"] == "mx1.example.com"


def test_phases_whose_entry_never_comes_still_join_the_message_trace(capture):
    make, rx = capture
    p = make()
    ingest = Ingest(p)
    ingest.batch(batch(log_entry(ENTRIES[0]), phases_event(ACCEPTED, [CONNECT, SMTP])))
    p.flush()
    assert not [s for _, s in rx.spans() if s.name == "connect"], "waits for the entry first"
    collect(p, rx, tick=True)
    attempt = ids.attempt_span_id(Q, "001", "ACCEPTED", 0)
    children = [s for _, s in rx.spans() if s.parent_span_id == attempt]
    assert sorted(s.name for s in children) == ["connect", "smtp"]
    assert {s.trace_id for s in children} == {TRACE}


def test_phases_reported_twice_give_one_span_each(capture):
    make, rx = capture
    p = make()
    ingest = Ingest(p)
    twice = phases_event(ACCEPTED, [CONNECT, dict(CONNECT, start_ms=T0 + 11)])
    ingest.batch(batch(twice, dict(twice, id="another.id")))
    collect(p, rx)
    names = [s.name for _, s in rx.spans()]
    assert names.count("connect") == 1


# -- queue events -------------------------------------------------------------------
def test_queue_release_ends_the_root_when_an_entry_was_lost(capture, js_encode):
    make, rx = capture
    p = make()
    src = RemoteLogSource(p, load_settings(environ={}).sources.remote_log)
    for d in js_encode([ENTRIES[0], ACCEPTED]):   # 2 recipients; 002's entry never arrives
        src.handle_datagram(d)
    p.flush()
    assert not [s for _, s in rx.spans() if s.name == "message"]
    released = int(time.time() * 1000) + 9000
    Ingest(p).batch(batch(ev("queue.release", released, queue_id=Q, seq="002", zone="default",
                             status="delivered")))
    collect(p, rx, tick=False)
    [root] = [s for _, s in rx.spans() if s.name == "message"]
    assert attrs(root.attributes)["mta.message.state"] == "delivered"
    assert root.end_time_unix_nano == released * 1_000_000


@pytest.mark.parametrize("event,state", [
    (dict(type_="queue.bounce", queue_id=Q, seq="002", zone="default", category="recipient"), "partially_delivered"),
    (dict(type_="queue.release", queue_id=Q, seq="002", status="unknown"), "partially_delivered"),
    (dict(type_="queue.release", queue_id=Q, seq="002", status="rejected"), "partially_delivered"),
])
def test_bounce_and_release_states(capture, js_encode, event, state):
    make, rx = capture
    p = make()
    src = RemoteLogSource(p, load_settings(environ={}).sources.remote_log)
    for d in js_encode([ENTRIES[0], ACCEPTED]):
        src.handle_datagram(d)
    fields = dict(event)
    Ingest(p).batch(batch(ev(fields.pop("type_"), T0, **fields)))
    collect(p, rx, tick=False)
    [root] = [s for _, s in rx.spans() if s.name == "message"]
    # "unknown": released without a status (a suppressed recipient) counts as dropped
    assert attrs(root.attributes)["mta.message.state"] == state


def test_queue_delayed_records_how_long_a_recipient_has_waited(capture):
    make, rx = capture
    p = make()
    Ingest(p).batch(batch(
        ev("queue.delayed", queue_id=Q, seq="002", zone="default", category="network",
           first_ms=T0, prev_ms=T0 + 600_000, last_ms=T0 + 3_600_000),
        ev("queue.delayed", queue_id=Q, seq="003", zone="default")))   # without times: nothing to record
    collect(p, rx)
    [(a, point)] = rx.last_points("mta.delivery.deferral_age")
    assert a == {"mta.zone": "default", "mta.bounce.category": "network"}
    assert point.count == 1 and point.sum == 3600.0
    assert rx.metrics()["mta.delivery.deferral_age"][0][1].unit == "s"


def test_message_headers_map_the_queue_id_before_queued(capture, js_encode):
    """SPAMCHECK is logged before QUEUED; with message.headers it is in the message's trace at once."""
    make, rx = capture
    p = make()
    spam = next(e for e in ENTRIES if e["action"] == "SPAMCHECK")
    Ingest(p).batch(batch(ev("message.headers", queue_id=Q, message_id="<20261126173700.4f2a@Mail.Example.ORG>"),
                          log_entry(spam)))
    p.flush()   # no tick: nothing is held back
    [(_, rec)] = rx.log_records()
    assert rec.trace_id == TRACE


def test_message_queue_teaches_the_index_too(capture):
    make, rx = capture
    p = make()
    Ingest(p).batch(batch(ev("message.queue", queue_id="q2", message_id="<a@B.example>", size=10, recipients=1,
                             interface="feeder"), ev("message.queue", queue_id="q3")))
    assert p.mail.corr.index.get("q2") == "a@b.example" and "q3" not in p.mail.corr.index


# -- plugin health ----------------------------------------------------------------------
def test_plugin_health_becomes_self_telemetry_per_process(capture, monkeypatch):
    make, rx = capture
    p = make()
    ingest = Ingest(p)
    health = dict(buffered=3, dropped=7, sent=1520, failed=2, retries=4, evicted=1, hook_errors=0)
    ingest.batch(batch(ev("plugin.health", **health)))
    ingest.batch(batch(ev("plugin.health", **dict(health, buffered=0, sent=1600)),
                       source=dict(SOURCE, context="main", pid=1)))
    collect(p, rx)
    key = {"plugin.instance": "mta-0", "plugin.context": "sender", "plugin.pid": 4711}
    got = {name: {json.dumps(a, sort_keys=True): pt.as_int for a, pt in rx.last_points("otelmta_plugin_" + name)}
           for name in ("buffered", "dropped", "sent", "failed", "retries", "evicted", "hook_errors")}
    assert got["sent"] == {json.dumps(key, sort_keys=True): 1520,
                           json.dumps(dict(key, **{"plugin.context": "main", "plugin.pid": 1}), sort_keys=True): 1600}
    assert got["dropped"][json.dumps(key, sort_keys=True)] == 7
    assert got["buffered"][json.dumps(key, sort_keys=True)] == 3
    own = [res for res, _ in rx.metrics()["otelmta_plugin_sent"]][0]
    assert own["service.name"] == "otel-mta"
    # a process that stopped reporting (restarted, gone) stops being exported
    monkeypatch.setattr(events_ingest, "HEALTH_STALE_S", -1)
    rx.requests["metrics"].clear()
    collect(p, rx)
    assert not rx.last_points("otelmta_plugin_sent")


def test_plugin_health_series_are_bounded_by_max_series():
    """Every (instance, context, pid) is a series of each otelmta_plugin_* metric:
    beyond metrics.max_series they fold into the overflow series, as elsewhere."""
    from otel_mta import catalog
    from otel_mta.signals.metrics import OVERFLOW, MetricStore
    health = events_ingest.PluginHealth(MetricStore(catalog.load(), max_series=2), "own")
    counts = dict(buffered=1, dropped=0, sent=5, failed=0, retries=0, evicted=0, hook_errors=0)
    for pid in range(5):
        health.update(dict(SOURCE, pid=pid), counts)
    for inst in (health.buffered, *health.counters.values()):
        assert len(inst.series) == 3 and ("own", OVERFLOW) in inst.series, inst.definition.name


def test_plugin_processes_remembered_between_sweeps_are_capped(monkeypatch):
    """ZoneMTA restarting in a loop brings a new pid every time: between two
    sweeps at most HEALTH_MAX_PROCESSES are remembered, the least recently
    heard of going first, with their series."""
    from otel_mta import catalog
    from otel_mta.signals.metrics import MetricStore
    monkeypatch.setattr(events_ingest, "HEALTH_MAX_PROCESSES", 3)
    health = events_ingest.PluginHealth(MetricStore(catalog.load()), "own")
    counts = dict(buffered=1, dropped=0, sent=5, failed=0, retries=0, evicted=0, hook_errors=0)
    for pid in (1, 2, 3, 1, 4, 5):      # pid 1 reports again before 4 and 5 arrive
        health.update(dict(SOURCE, pid=pid), counts)
    assert [k[2] for k in health._seen] == [1, 4, 5]
    assert sorted(k[1][2] for k in health.counters["sent"].series) == [1, 4, 5]


def test_an_entry_without_action_is_refused_not_mapped(capture):
    make, rx = capture
    p = make()
    r = Ingest(p).batch(batch(ev("log.entry", entry={"id": Q}), ev("log.entry", entry={"id": 12, "action": "X"})))
    assert (r.accepted, r.rejected, r.errors) == (1, 1, [{"index": 0, "reason": "not_an_entry"}])
    collect(p, rx)
    [(_, rec)] = rx.log_records()
    assert attrs(rec.attributes)["mta.queue_id"] == "12"
    refused = {a["reason"]: pt.as_int for a, pt in rx.last_points("otelmta_receiver_refused_records")}
    assert refused == {"not_an_entry": 1}


def test_with_the_events_endpoint_on_an_attempt_span_waits_for_the_plugins_timing(capture, js_encode):
    """The remote log is faster than the plugin's batches: the attempt span waits
    (up to the hold time) so that it starts when ZoneMTA fetched the delivery —
    ZoneMTA's own `timer` starts after the connection was made."""
    make, rx = capture
    p = make(channels=2)
    ingest = Ingest(p)   # the events endpoint is on
    # a plugin is reporting (here phases of another message): from now on attempts wait for theirs
    ingest.batch(batch(phases_event(dict(ACCEPTED, id="18c5f3d2a3e0009999"), [CONNECT])))
    udp = RemoteLogSource(p, load_settings(environ={}).sources.remote_log)
    for d in js_encode([ENTRIES[0], ACCEPTED, DEFERRED]):
        udp.handle_datagram(d)
    p.flush()
    assert not [s for _, s in rx.spans() if s.name == "delivery" and s.span_id != ids.attempt_span_id(
        "18c5f3d2a3e0009999", "001", "ACCEPTED", 0)], "waiting for the plugin"
    assert [r for _, r in rx.log_records() if attrs(r.attributes)["mta.action"] == "ACCEPTED"], "logs do not wait"
    now_ms = int(time.time() * 1000)
    connect = dict(CONNECT, start_ms=now_ms - 900, end_ms=now_ms - 600)
    smtp = dict(SMTP, start_ms=now_ms - 600, end_ms=now_ms - 10)
    ingest.batch(batch(phases_event(ACCEPTED, [connect, smtp], attempt_start_ms=now_ms - 950)))
    p.flush()
    attempt_id = ids.attempt_span_id(Q, "001", "ACCEPTED", 0)
    [attempt] = [s for _, s in rx.spans() if s.span_id == attempt_id]
    assert attempt.start_time_unix_nano == (now_ms - 950) * 1_000_000
    children = [s for _, s in rx.spans() if s.parent_span_id == attempt_id]
    assert len(children) == 2 and all(attempt.start_time_unix_nano <= c.start_time_unix_nano for c in children)
    # the deferred attempt's phases never come: after the hold time it goes out as the remote log timed it
    collect(p, rx, tick=True)
    [deferred] = [s for _, s in rx.spans() if s.span_id == ids.attempt_span_id(Q, "002", "DEFERRED", 1)]
    assert deferred.start_time_unix_nano == deferred.end_time_unix_nano
    # and phases that come even later still join as children
    ingest.batch(batch(phases_event(DEFERRED, [dict(CONNECT, error="ETIMEDOUT")], defcount=1)))
    p.flush()
    assert [s.name for _, s in rx.spans() if s.parent_span_id == deferred.span_id] == ["connect"]


def test_the_duplicate_window_is_bounded():
    from otel_mta.correlate import HashWindow
    w = HashWindow(3)
    assert [w.seen(i) for i in ("a", "b", "a", "c", "d")] == [False, False, True, False, False]
    assert w.seen("a") is False, "a left the window when d came"
    assert len(w._set) == len(w._order) == 3


def test_without_a_plugin_reporting_attempt_spans_do_not_wait(capture, js_encode):
    """The events endpoint is on by default; an install without the plugin must
    not get its spans late."""
    make, rx = capture
    p = make(channels=2)
    Ingest(p)
    udp = RemoteLogSource(p, load_settings(environ={}).sources.remote_log)
    for d in js_encode([ENTRIES[0], ACCEPTED]):
        udp.handle_datagram(d)
    p.flush()
    assert [s for _, s in rx.spans() if s.span_id == ids.attempt_span_id(Q, "001", "ACCEPTED", 0)]
