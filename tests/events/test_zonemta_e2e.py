"""A real ZoneMTA (npm, on Redis from Debian and FerretDB) with our plugin in all
three contexts AND its UDP remote log, both pointed at a real sidecar process
that exports to a real OTLP receiver. Mail is delivered, deferred (451) and
rejected (550, which makes ZoneMTA send a bounce) by a local SMTP sink.

What an operator would check: one trace per message whose id derives from the
Message-ID, attempt spans with the plugin's connect/smtp children, root span
states, logs and metrics — each entry counted once although it arrived twice.
"""
from __future__ import annotations

import collections

import pytest

from otel_mta import ids
from tests.events.conftest import PLUGIN_DIR
from tests.otlp_receiver import attrs

SENDER = "alice@sender.test"
# expected root span state -> (recipient, Message-ID); a deferred message's root ends as "queued"
MAIL = {"delivered": ("bob@rcpt.test", "<e2e-delivered@Sender.TEST>"),
        "queued": ("later@rcpt.test", "<e2e-deferred@Sender.TEST>"),
        "bounced": ("nobody@rcpt.test", "<e2e-rejected@Sender.TEST>")}


def _logs(rx):
    return [(attrs(r.attributes), r) for _, r in rx.log_records()]


def _queue_ids(rx) -> dict:
    """Normalised Message-ID -> queue id, from QUEUED log records."""
    return {a["mta.message_id"]: a["mta.queue_id"] for a, _ in _logs(rx) if a["mta.action"] == "QUEUED"}


@pytest.fixture
def stack(zonemta_factory, smtp_sink, events_sidecar, grpc_receiver, plugin_modules, tmp_path):
    smtp_sink.reply("later@", "451 4.3.0 Mailbox busy, try again later")
    smtp_sink.reply("nobody@", "550 5.1.1 No such user here")
    # attempt spans wait for the plugin's phases; on a busy CI machine its batch may need more than 2 s
    cfg = tmp_path / "otel-mta.yaml"
    cfg.write_text("correlation: {hold: 15s}\n")
    sc = events_sidecar(grpc_receiver, env={"OTEL_METRIC_EXPORT_INTERVAL": "500"}, config=cfg)
    zm = zonemta_factory(remote_log_port=sc.remote_log_port, plugins={str(PLUGIN_DIR): {
        "enabled": ["main", "receiver", "sender"], "url": sc.events_url,
        "flushIntervalMs": 200, "healthIntervalMs": 2000}})
    return zm, sc, grpc_receiver.received, smtp_sink


def test_zonemta_with_plugin_and_remote_log_to_a_real_sidecar(stack):
    zm, sc, rx, sink = stack
    for rcpt, mid in MAIL.values():
        assert zm.send(SENDER, [rcpt], subject="otel-mta e2e", message_id=mid) == mid
    mids = {state: ids.normalize_message_id(mid) for state, (_, mid) in MAIL.items()}

    def settled(r):
        logs = _logs(r)
        actions = collections.Counter(a["mta.action"] for a, _ in logs)
        spans = [s for _, s in r.spans()]
        contexts = {a["plugin.context"] for a, _ in r.last_points("otelmta_plugin_sent")}
        dups = sum(p.as_int for a, p in r.last_points("otelmta_receiver_deduplicated_records")
                   if a["reason"] == "duplicate")
        return (actions["ACCEPTED"] >= 2 and actions["DEFERRED"] >= 1 and actions["REJECTED"] >= 1
                and actions["QUEUE_BOUNCE"] >= 1 and sum(1 for s in spans if s.name == "smtp") >= 4
                and contexts >= {"main", "receiver", "sender"} and dups >= len(logs))

    rx.wait_for(settled, timeout=90, what="every entry on both channels, phases, plugin health")
    logs = _logs(rx)
    spans = {s.span_id: s for _, s in rx.spans()}
    queue_ids = _queue_ids(rx)
    assert set(mids.values()) <= set(queue_ids)
    bounce_mid = next(m for m in queue_ids if m not in mids.values())   # ZoneMTA's DSN to the sender
    assert sorted(m.mail_from for m in sink.messages) == ["<>", SENDER]

    # nothing counted twice: every entry came over UDP and from the plugin, one of each was kept
    per_entry = collections.Counter((a["mta.queue_id"], a["mta.action"], a.get("mta.delivery.seq"),
                                     a.get("mta.defer.count")) for a, _ in logs)
    assert max(per_entry.values()) == 1, per_entry
    dups = {a["receiver"]: p.as_int for a, p in rx.last_points("otelmta_receiver_deduplicated_records")
            if a["reason"] == "duplicate"}
    # (UDP arrives at once, the plugin's batch within flushIntervalMs: its copies are the duplicates)
    assert sum(dups.values()) == len(logs) and dups.get("events")
    attempts = collections.Counter()
    for a, p in rx.last_points("mta.delivery.attempts"):
        attempts[a["mta.delivery.outcome"]] += p.as_int
    assert attempts == {"delivered": 2, "deferred": 1, "rejected": 1}
    assert sum(p.as_int for _, p in rx.last_points("mta.message.queued")) == 4
    deliveries = [s for s in spans.values() if s.name == "delivery"]
    assert len(deliveries) == 4

    # one trace per message, derived from its Message-ID
    for state, mid in list(mids.items()) + [("delivered", bounce_mid)]:
        qid = queue_ids[mid]
        trace = ids.trace_id_for(mid, None)
        mine = [r for a, r in logs if a["mta.queue_id"] == qid]
        assert mine and {r.trace_id for r in mine} == {trace}, state
        root = spans[ids.root_span_id(qid)]
        assert root.trace_id == trace and root.name == "message"
        assert attrs(root.attributes)["mta.message.state"] == state
        [attempt] = [s for s in deliveries if s.trace_id == trace]
        assert attempt.parent_span_id == root.span_id
        # the plugin's phases: children of the attempt span, in the same trace
        children = {s.name: s for s in spans.values() if s.parent_span_id == attempt.span_id}
        assert set(children) == {"connect", "smtp"}, (state, set(children))
        connect, smtp = children["connect"], children["smtp"]
        assert connect.trace_id == smtp.trace_id == trace
        assert connect.span_id == ids.phase_span_id(attempt.span_id, "connect")
        c = attrs(connect.attributes)
        assert c["network.peer.address"] == sink.host and c["server.port"] == sink.port
        assert c["mta.connect.tries"] >= 1 and c["tls.established"] is False   # the sink offers no STARTTLS
        assert connect.start_time_unix_nano <= connect.end_time_unix_nano <= smtp.start_time_unix_nano
        assert smtp.start_time_unix_nano <= smtp.end_time_unix_nano
        if state == "delivered":
            assert smtp.status.code == 0 and attempt.status.code == 0
        else:
            assert smtp.status.code == 2, state   # 451 / 550 at RCPT TO
        # the attempt span covers its phases: it waited for the plugin's timing of the attempt
        assert attempt.start_time_unix_nano <= connect.start_time_unix_nano, state
        assert smtp.end_time_unix_nano <= attempt.end_time_unix_nano, state
    rejected = spans[ids.attempt_span_id(queue_ids[mids["bounced"]], "001", "REJECTED", 0)]
    assert rejected.status.code == 2 and attrs(rejected.attributes)["mta.smtp.code"] == 550
    deferred = spans[ids.attempt_span_id(queue_ids[mids["queued"]], "001", "DEFERRED", 1)]
    assert attrs(deferred.attributes)["mta.smtp.code"] == 451

    # logs an operator reads
    by_action = {a["mta.action"]: r for a, r in logs if a["mta.queue_id"] == queue_ids[mids["queued"]]}
    assert by_action["DEFERRED"].severity_text == "WARN"
    assert "451 4.3.0" in by_action["DEFERRED"].body.string_value
    assert not any("later@" in r.body.string_value for _, r in logs), "recipients are masked by default"

    # the plugin reports its health from every context, with nothing lost
    for name in ("dropped", "failed", "hook_errors"):
        assert all(p.as_int == 0 for _, p in rx.last_points("otelmta_plugin_" + name)), name
    assert sc.terminate() == 0
