"""What an operator sees for each ZoneMTA remote-log entry: log records, spans,
metrics — fed through the real decoder with bytes from ZoneMTA's real encoder."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict

from otel_mta import ids
from otel_mta.config import load as load_settings
from otel_mta.sources.remote_log import RemoteLogSource
from tests.otlp_receiver import attrs

ENTRIES = [json.loads(l) for l in (Path(__file__).parent / "fixtures" / "remote_log" / "entries.jsonl").read_text().splitlines()]
GOLDEN = Path(__file__).parent / "golden" / "remote_log.otlp.json"
Q = "18c5f3d2a3e0001234"
MID = "20261126173700.4f2a@mail.example.org"
TRACE = ids.trace_id_for(MID, None)


def run(capture, js_encode, entries, env=None, channels=1, tick=True):
    make, received = capture
    pipeline = make(env, channels)
    source = RemoteLogSource(pipeline, load_settings(environ={}).sources.remote_log)
    for data in js_encode(entries):
        source.handle_datagram(data, ("127.0.0.1", 5000))
    if tick:
        pipeline.mail.tick(flush_all=True)
    pipeline.flush()
    payload, _ = pipeline.metrics.collect()
    from tests.otlp_receiver import REQUEST
    received.add("metrics", REQUEST["metrics"].FromString(payload))
    return pipeline, received


def by_action(received):
    out = {}
    for res, rec in received.log_records():
        out.setdefault(attrs(rec.attributes)["mta.action"], []).append((res, rec))
    return out


def test_one_log_record_per_entry_with_severity_and_readable_body(capture, js_encode):
    _, rx = run(capture, js_encode, ENTRIES)
    logs = by_action(rx)
    assert sum(len(v) for v in logs.values()) == len(ENTRIES)
    sev = {a: {r.severity_text for _, r in recs} for a, recs in logs.items()}
    assert sev["ACCEPTED"] == {"INFO"} and sev["DEFERRED"] == {"WARN"} and sev["REJECTED"] == {"ERROR"}
    assert sev["NOQUEUE"] == {"ERROR"} and sev["QUEUE_BOUNCE"] == {"INFO", "ERROR"} and sev["QUEUE_POLL"] == {"DEBUG"}
    [(res, acc)] = logs["ACCEPTED"]
    assert res["service.name"] == "zonemta" and res["host.name"]
    assert acc.body.string_value == (
        f"ACCEPTED {Q}.001 to example.com via mx1.example.com[192.0.2.10] from 10.0.0.5 in 345 ms: "
        "250 2.0.0 OK  1764178620 a1b2c3d4e5f6 - gsmtp")
    a = attrs(acc.attributes)
    assert a["mta.smtp.code"] == 250 and a["mta.smtp.enhanced_status"] == "2.0.0"
    assert a["mta.tls.version"] == "TLSv1.3" and a["mta.tls.authorized"] is True
    assert a["mta.zone"] == "default" and a["mta.sending_ip"] == "10.0.0.5"
    assert acc.event_name == "zonemta.accepted"
    # entries carry no wall-clock time: ZoneMTA sends them as the attempt ends
    assert acc.time_unix_nano == acc.observed_time_unix_nano > 0
    [(_, queued)] = [x for x in logs["QUEUED"] if attrs(x[1].attributes)["mta.queue_id"] == Q]
    assert queued.body.string_value == f"QUEUED {Q} from example.org for 2 recipients (example.com, example.net), 20480 bytes via feeder"


def test_one_trace_per_message(capture, js_encode):
    _, rx = run(capture, js_encode, ENTRIES)
    for _, rec in rx.log_records():
        if attrs(rec.attributes)["mta.queue_id"] == Q:
            assert rec.trace_id == TRACE, attrs(rec.attributes)["mta.action"]
    spans = [s for _, s in rx.spans() if s.trace_id == TRACE]
    names = sorted(s.name for s in spans)
    # the root ended at the first deferral; message.final carries the outcome that came later
    assert names == ["delivery", "delivery", "delivery", "delivery", "message", "message.final"]
    root = next(s for s in spans if s.name == "message")
    assert root.span_id == ids.root_span_id(Q) and not root.parent_span_id
    for s in spans:
        if s.name != "message":
            assert s.parent_span_id == root.span_id


def test_delivery_attempt_spans(capture, js_encode):
    _, rx = run(capture, js_encode, ENTRIES)
    attempts = {(attrs(s.attributes)["mta.delivery.seq"], attrs(s.attributes)["mta.delivery.outcome"],
                 attrs(s.attributes).get("mta.defer.count")): s for _, s in rx.spans() if s.name == "delivery"}
    acc = attempts[("001", "delivered", None)]
    assert acc.kind == acc.SPAN_KIND_CLIENT
    # timer: 345 ms from fetching the message to the end of DATA; start: 61 ms to the first byte
    assert acc.end_time_unix_nano - acc.start_time_unix_nano == 345 * 1_000_000
    [event] = acc.events
    assert event.name == "message data started"
    assert event.time_unix_nano - acc.start_time_unix_nano == 61 * 1_000_000
    a = attrs(acc.attributes)
    assert a["server.address"] == "mx1.example.com" and a["network.peer.address"] == "192.0.2.10"
    assert acc.status.code == 0
    assert acc.span_id == ids.attempt_span_id(Q, "001", "ACCEPTED", 0)
    rej = attempts[("002", "rejected", None)]
    assert rej.status.code == rej.status.STATUS_CODE_ERROR
    assert rej.status.message.startswith("550 5.1.1 <***@example.net>")
    assert attrs(rej.attributes)["error.type"] == "recipient"
    first_defer = attempts[("002", "deferred", 1)]
    # connection failed: ZoneMTA had no timer/start, the span sits at arrival time
    assert first_defer.end_time_unix_nano == first_defer.start_time_unix_nano > 0
    assert not first_defer.events
    second = attempts[("002", "deferred", 2)]  # timer false: the stream never finished
    assert second.end_time_unix_nano == second.start_time_unix_nano
    assert first_defer.span_id == ids.attempt_span_id(Q, "002", "DEFERRED", 1)
    assert attempts[("002", "deferred", 2)].span_id == ids.attempt_span_id(Q, "002", "DEFERRED", 2)


def test_root_span_ends_when_every_recipient_is_final(capture, js_encode):
    accepted = next(e for e in ENTRIES if e["action"] == "ACCEPTED")
    rejected = next(e for e in ENTRIES if e["action"] == "REJECTED")
    _, rx = run(capture, js_encode, [ENTRIES[0], accepted, rejected], tick=False)
    [root] = [s for _, s in rx.spans() if s.name == "message"]
    a = attrs(root.attributes)
    assert a["mta.message.state"] == "partially_delivered" and a["mta.recipient.count"] == 2
    assert root.status.code == root.status.STATUS_CODE_ERROR
    last = max(s.end_time_unix_nano for _, s in rx.spans() if s.name == "delivery")
    assert root.end_time_unix_nano == last and root.start_time_unix_nano < last


@pytest.mark.parametrize("final,state,error", [
    ({"action": "ACCEPTED", "seq": "001", "zone": "default", "to": "bob@example.com"}, "delivered", False),
    ({"action": "REJECTED", "seq": "001", "zone": "default", "to": "bob@example.com", "category": "recipient",
      "response": "550 5.1.1 no such user"}, "bounced", True),
    ({"action": "DROP", "seq": "001", "recipient": "bob@example.com", "reason": "blacklisted"}, "dropped", False),
    ({"action": "DELETED", "seq": "001", "reason": "admin"}, "dropped", False),
])
def test_root_span_of_a_one_recipient_message_ends_with_its_outcome(capture, js_encode, final, state, error):
    queued = dict(ENTRIES[0], id="q1", to="bob@example.com")
    _, rx = run(capture, js_encode, [queued, dict(final, id="q1")], tick=False)
    [root] = [s for _, s in rx.spans() if s.name == "message"]
    assert attrs(root.attributes)["mta.message.state"] == state
    assert (root.status.code == root.status.STATUS_CODE_ERROR) is error


def test_root_span_of_deferred_message_ends_as_queued(capture, js_encode):
    entries = [e for e in ENTRIES if e["id"] == Q and e["action"] in ("QUEUED", "DEFERRED")][:2]
    _, rx = run(capture, js_encode, entries, tick=False)
    [root] = [s for _, s in rx.spans() if s.name == "message"]
    assert attrs(root.attributes)["mta.message.state"] == "queued"


def test_metrics(capture, js_encode):
    _, rx = run(capture, js_encode, ENTRIES)
    attempts = {(p[0]["mta.delivery.outcome"], p[0].get("mta.bounce.category")): p[1].as_int
                for p in rx.last_points("mta.delivery.attempts")}
    assert attempts == {("delivered", None): 1, ("deferred", "network"): 1, ("deferred", "greylist"): 1,
                        ("rejected", "recipient"): 1}
    for point_attrs, _ in rx.last_points("mta.delivery.attempts"):
        assert point_attrs["mta.zone"] == "default"
        assert point_attrs["mta.recipient.domain"] in ("example.com", "example.net")
    queued = {p[0]["mta.interface"]: p[1].as_int for p in rx.last_points("mta.message.queued")}
    assert queued == {"feeder": 1, "bounce": 1}
    deliveries = {p[0]["mta.interface"]: p[1].as_int for p in rx.last_points("mta.delivery.queued")}
    assert deliveries == {"feeder": 2, "bounce": 1}     # one per recipient: the queue's intake
    [(a, hist)] = [p for p in rx.last_points("mta.delivery.duration") if p[0]["mta.delivery.outcome"] == "delivered"]
    assert hist.count == 1 and hist.sum == pytest.approx(0.345)
    sizes = {p[0]["mta.interface"]: p[1].sum for p in rx.last_points("mta.message.size")}
    assert sizes == {"feeder": 20480, "bounce": 4096}
    metric = rx.metrics()["mta.delivery.duration"][0][1]
    assert metric.unit == "s" and metric.histogram.aggregation_temporality == 2
    assert {p[0]["mta.bounce.type"]: p[0]["mta.bounce.queued"] for p in rx.last_points("mta.bounce.generated")} == {
        "failure": "yes", "delayed": "no"}
    checks = {(p[0]["mta.check.type"], p[0]["mta.check.result"]) for p in rx.last_points("mta.message.checks")}
    assert checks == {("spam", "no action"), ("virus", "clean")}
    assert rx.last_points("mta.delivery.dropped")[0][0]["mta.drop.reason"] == "Recipient was found from suppression list"
    assert rx.last_points("mta.delivery.deleted")[0][1].as_int == 1
    assert rx.last_points("mta.message.queue_errors")[0][1].as_int == 1
    accepted = rx.last_points("otelmta_receiver_accepted_records")
    assert accepted[0][1].as_int == len(ENTRIES)


def _everything(rx) -> str:
    out = []
    for signal in ("logs", "traces", "metrics"):
        for _, req in rx.requests[signal]:
            out.append(json.dumps(MessageToDict(req)))
    return "\n".join(out)


def test_no_personal_data_leaves_by_default(capture, js_encode):
    _, rx = run(capture, js_encode, ENTRIES)
    text = _everything(rx)
    for secret in ("alice@", "bob@", "carol@", "dave@", "eve@", "frank@", "Quarterly", "203.0.113.9",
                   "client.example.org", '"alice"', "Alice Example", "203.0.113.50"):
        assert secret not in text, secret
    assert "example.net" in text and "***@example.net" in text


def test_privacy_full_and_hmac(capture, js_encode):
    queued = [ENTRIES[0]]
    _, rx = run(capture, js_encode, queued, env={
        "OTEL_MTA_HMAC_KEY": "k"}, tick=False)
    make, _ = capture
    from otel_mta.privacy import Redactor
    red = Redactor(recipient="hmac", hmac_key=b"k")
    assert red.hash("Bob@Example.com") == red.hash("bob@example.com")
    make2, rx2 = capture
    from otel_mta.pipeline import Pipeline
    settings = load_settings(environ={"OTEL_MTA_HMAC_KEY": "k"}).model_copy(update={"privacy": load_settings(
        environ={}).privacy.model_copy(update={"recipient": "hmac", "subject": "full", "hmac_key": "k"})})
    received = []
    p = Pipeline(settings, lambda s, b, n: received.append((s, b)))
    src = RemoteLogSource(p, settings.sources.remote_log)
    for d in js_encode(queued):
        src.handle_datagram(d)
    p.flush()
    from tests.otlp_receiver import REQUEST
    [(sig, body)] = [x for x in received if x[0] == "logs"]
    rec = REQUEST["logs"].FromString(body).resource_logs[0].scope_logs[0].log_records[0]
    a = attrs(rec.attributes)
    assert a["mta.recipient.hash"] == [red.hash("bob@example.com"), red.hash("carol@example.net")]
    assert a["mta.subject"] == ENTRIES[0]["subject"]
    assert "mta.recipient.address" not in a


def test_spamcheck_before_queued_joins_the_message_trace(capture, js_encode):
    spam = next(e for e in ENTRIES if e["action"] == "SPAMCHECK")
    queued = ENTRIES[0]
    _, rx = run(capture, js_encode, [spam, queued], tick=False)
    traces = {attrs(r.attributes)["mta.action"]: r.trace_id for _, r in rx.log_records()}
    assert traces["SPAMCHECK"] == traces["QUEUED"] == TRACE


def test_spamcheck_without_queued_falls_back_to_queue_id(capture, js_encode):
    spam = next(e for e in ENTRIES if e["action"] == "SPAMCHECK")
    _, rx = run(capture, js_encode, [spam])
    [(_, rec)] = rx.log_records()
    assert rec.trace_id == ids.trace_id_for(None, Q)


def test_entries_with_only_a_queue_id_resolve_through_the_index(capture, js_encode):
    bounce = next(e for e in ENTRIES if e["action"] == "QUEUE_BOUNCE")
    _, rx = run(capture, js_encode, [ENTRIES[0], bounce])
    assert {r.trace_id for _, r in rx.log_records()} == {TRACE}


def test_unknown_actions_are_kept(capture, js_encode):
    _, rx = run(capture, js_encode, [e for e in ENTRIES if e["action"] == "QUEUE_POLL"])
    [(_, rec)] = rx.log_records()
    entry = json.loads(attrs(rec.attributes)["mta.entry"])
    assert entry["match"] is True and entry["query"]["queue"] == "default"


def test_recipient_domain_metric_is_capped_at_top_n(capture, js_encode):
    base = next(e for e in ENTRIES if e["action"] == "ACCEPTED")
    entries = [{**base, "seq": f"{i:03x}", "to": f"u@d{i % 5}.example"} for i in range(1, 40)]
    _, rx = run(capture, js_encode, entries, env={})
    # default top-N is 100: all five domains fit
    assert len(rx.last_points("mta.delivery.attempts")) == 5
    make, rx2 = capture
    from otel_mta.privacy import TopN
    top = TopN(2)
    seen = [top(f"d{i % 5}") for i in range(50)]
    assert set(seen) == {"d0", "d1", "other"}
    top.rerank()
    assert len({top(f"d{i % 5}") for i in range(50)} - {"other"}) == 2


def test_malformed_datagrams_are_counted_and_the_source_keeps_going(capture, js_encode):
    make, rx = capture
    p = make()
    src = RemoteLogSource(p, load_settings(environ={}).sources.remote_log)
    bad = [b"", b"\xc1garbage", b"\x93\x01\x02\x03", js_encode([{"id": "x"}])[0], js_encode([[1, 2]])[0], b"\x81\xa1a" * 3, b"\x01\x02"]
    for d in bad:
        src.handle_datagram(d)
    good = js_encode([ENTRIES[0]])[0]
    src.handle_datagram(good)
    payload, _ = p.metrics.collect()
    from tests.otlp_receiver import REQUEST
    rx.add("metrics", REQUEST["metrics"].FromString(payload))
    refused = {pt[0]["reason"]: pt[1].as_int for pt in rx.last_points("otelmta_receiver_refused_records")}
    assert refused == {"empty": 1, "unknown_type": 1, "trailing_bytes": 1, "not_an_entry": 3, "truncated": 1}
    assert rx.last_points("otelmta_receiver_accepted_records")[0][1].as_int == 1


def test_a_decoder_failure_is_counted_and_the_rest_of_the_burst_goes_on(capture, js_encode, monkeypatch):
    """Not a DecodeError (a decoder bug, MemoryError): that datagram is counted
    as internal_error, the next ones of the same burst are still mapped."""
    from otel_mta.sources import remote_log
    make, rx = capture
    p = make()
    src = RemoteLogSource(p, load_settings(environ={}).sources.remote_log)
    real = remote_log.decode

    def flaky(data):
        if data == b"boom":
            raise MemoryError
        return real(data)

    monkeypatch.setattr(remote_log, "decode", flaky)
    for d in (b"boom", js_encode([ENTRIES[0]])[0]):
        src.handle_datagram(d, ("10.0.0.1", 1))
    src._count_accepted()
    payload, _ = p.metrics.collect()
    from tests.otlp_receiver import REQUEST
    rx.add("metrics", REQUEST["metrics"].FromString(payload))
    refused = {pt[0]["reason"]: pt[1].as_int for pt in rx.last_points("otelmta_receiver_refused_records")}
    assert refused == {"internal_error": 1}
    assert rx.last_points("otelmta_receiver_accepted_records")[0][1].as_int == 1


def test_duplicates_from_two_channels_count_once(capture, js_encode):
    acc = next(e for e in ENTRIES if e["action"] == "ACCEPTED")
    _, rx = run(capture, js_encode, [ENTRIES[0], acc, acc], channels=2)
    assert [p[1].as_int for p in rx.last_points("mta.delivery.attempts")] == [1]
    assert len([s for _, s in rx.spans() if s.name == "delivery"]) == 1
    # a copy ignored on purpose, not a loss: not in otelmta_receiver_dropped_records
    [(a, n)] = rx.last_points("otelmta_receiver_deduplicated_records")
    assert (a["receiver"], a["reason"], n.as_int) == ("remote_log", "duplicate", 1)
    assert not rx.last_points("otelmta_receiver_dropped_records")


ARRIVAL = 1770000000000000000  # fixture timestamps are from 2025; later ones are arrival times


def _normalise(doc):
    """Golden form: no arrival times, no machine-specific resource values."""
    for rl in doc.get("resourceLogs", []) + doc.get("resourceSpans", []):
        for kv in rl["resource"]["attributes"]:
            if kv["key"] in ("host.name", "service.instance.id"):
                kv["value"] = {"stringValue": "<host>"}
        for sl in rl.get("scopeLogs", []) + rl.get("scopeSpans", []):
            sl["scope"]["version"] = "<version>"
            items = sl.get("logRecords", []) + sl.get("spans", [])
            items += [ev for s in sl.get("spans", []) for ev in s.get("events", [])]
            for item in items:
                for key in ("timeUnixNano", "observedTimeUnixNano", "startTimeUnixNano", "endTimeUnixNano"):
                    if key in item and int(item[key]) > ARRIVAL:
                        item[key] = "<arrival>"
                for kv in item.get("attributes", []):
                    if kv["key"] == "mta.message.time_in_queue_ms":   # between two arrivals
                        kv["value"] = {"intValue": "<arrival difference>"}
    return doc


def test_golden_otlp_output(capture, js_encode):
    """The exact OTLP for the fixture entries; UPDATE_GOLDEN=1 rewrites it after a deliberate change."""
    from otel_mta.export.senders import to_otlp_json
    make, rx = capture
    out = {"logs": [], "traces": []}
    p = make()
    sink = []
    p.logs._submit = p.spans._submit = lambda s, b, n: sink.append((s, b))
    src = RemoteLogSource(p, load_settings(environ={}).sources.remote_log)
    for d in js_encode(ENTRIES):
        src.handle_datagram(d)
    p.mail.tick(flush_all=True)
    p.flush()
    for signal, body in sink:
        out[signal].append(_normalise(to_otlp_json(signal, body)))
    text = json.dumps(out, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
