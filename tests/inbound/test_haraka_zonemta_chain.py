"""The inbound half and the outbound half of the mail stack in one trace: a real
Haraka (with our plugin) accepts a message and forwards it with its
smtp_forward plugin to a real ZoneMTA (its remote log on), which delivers it
to the SMTP sink, deferred once for one recipient. Both report to one real
sidecar; the message's Message-ID gives every span the same trace id, so one
trace shows Haraka's inbound SERVER span, ZoneMTA's message root span and its
delivery attempts, with the catalog's names, attributes and metrics."""
from __future__ import annotations

import collections

from otel_mta import ids
from tests.otlp_receiver import attrs


def _by_service(rx, trace_id):
    out = collections.defaultdict(list)
    for res, s in rx.spans():
        if s.trace_id == trace_id:
            out[res.get("service.name")].append(s)
    return out


def test_haraka_smtp_forward_to_zonemta_is_one_trace(haraka_factory, zonemta_factory, smtp_sink, events_sidecar,
                                                     grpc_receiver):
    smtp_sink.reply("grey@", "451 4.7.1 Greylisted, try again later")
    sc = events_sidecar(grpc_receiver, env={"OTEL_METRIC_EXPORT_INTERVAL": "500"})
    zm = zonemta_factory(remote_log_port=sc.remote_log_port)
    haraka = haraka_factory(
        plugins=["otel-mta", "test_policy", "rcpt_to.in_host_list", "queue/smtp_forward"],
        events_url=sc.events_url,
        config={"smtp_forward.ini": f"host={zm.smtp_host}\nport={zm.smtp_port}\nenable_tls=false\n"})

    mid, refused, final = haraka.send("alice@sender.test", ["bob@rcpt.test", "grey@rcpt.test", "nobody@rcpt.test"],
                                      message_id="<chain-1@Sender.TEST>")
    assert final[0] == 250, final
    assert set(refused) == {"nobody@rcpt.test"}
    trace = ids.trace_id_for(mid, None)
    rx = grpc_receiver.received

    def settled(r):
        spans = _by_service(r, trace)
        names = collections.Counter(s.name for s in spans["zonemta"])
        return spans["haraka"] and names["message"] == 1 and names["delivery"] >= 2

    rx.wait_for(settled, timeout=90, what="Haraka's inbound span and ZoneMTA's root and delivery spans in one trace")
    spans = _by_service(rx, trace)

    # Haraka: the SMTP transaction it received
    [inbound] = spans["haraka"]
    ia = attrs(inbound.attributes)
    assert inbound.name == "inbound" and inbound.kind == 2
    assert ia["mta.message_id"] == "chain-1@sender.test"
    assert ia["mta.inbound.outcome"] == "accepted" and ia["mta.recipient.count"] == 2
    assert inbound.span_id == ids.inbound_span_id(ia["haraka.transaction.id"])

    # ZoneMTA: the message it queued from Haraka, and its delivery attempts
    zonemta = {s.name: [] for s in spans["zonemta"]}
    for s in spans["zonemta"]:
        zonemta[s.name].append(s)
    [root] = zonemta["message"]
    ra = attrs(root.attributes)
    assert root.span_id == ids.root_span_id(ra["mta.queue_id"])
    assert ra["mta.message_id"] == "chain-1@sender.test" and ra["mta.recipient.count"] == 2
    outcomes = sorted(attrs(d.attributes)["mta.delivery.outcome"] for d in zonemta["delivery"])
    assert outcomes == ["deferred", "delivered"]
    assert all(d.parent_span_id == root.span_id and d.kind == 3 for d in zonemta["delivery"])
    # in time order: Haraka received it, then ZoneMTA queued it (while Haraka's queue hook forwarded it)
    assert inbound.start_time_unix_nano <= root.start_time_unix_nano <= inbound.end_time_unix_nano + 1_000_000_000
    assert all(d.start_time_unix_nano >= root.start_time_unix_nano - 1_000_000_000 for d in zonemta["delivery"])

    # the logs of both MTAs are in that trace too
    services = collections.Counter(res.get("service.name") for res, r in rx.log_records() if r.trace_id == trace)
    assert services["haraka"] >= 4 and services["zonemta"] >= 3, services   # 3 RCPT + the transaction; QUEUED + 2

    # what reached the sink came through Haraka and ZoneMTA
    [delivered] = [m for m in smtp_sink.wait_for_messages(1) if m.message["Message-ID"] == mid]
    assert delivered.rcpt_tos == ["bob@rcpt.test"]
    assert any("Haraka" in h and "mx.haraka.test" in h for h in delivered.message.get_all("Received")), \
        "Haraka's Received header: the message went through Haraka"

    # metrics of both halves
    def total(r, name, **match):
        return sum(p.as_int for a, p in r.last_points(name) if all(a.get(k) == v for k, v in match.items()))

    rx.wait_for(lambda r: total(r, "mta.inbound.transactions", **{"mta.inbound.outcome": "accepted"}) == 1
                and total(r, "mta.delivery.attempts") >= 2, timeout=20, what="metrics of both halves")
    assert total(rx, "mta.inbound.recipients", **{"mta.inbound.outcome": "refused"}) == 1
    assert total(rx, "mta.delivery.attempts", **{"mta.delivery.outcome": "delivered"}) == 1
    assert total(rx, "mta.message.queued") == 1
    # waiting for a final outcome: ZoneMTA's message (grey is deferred), not Haraka's transaction
    exports = len(rx.requests["metrics"])
    rx.wait_for(lambda r: len(r.requests["metrics"]) >= exports + 2, timeout=20, what="a metric export after that")
    assert [p.as_int for _, p in rx.last_points("otelmta_tracker_queued_messages")] == [1]
    assert sc.terminate() == 0
