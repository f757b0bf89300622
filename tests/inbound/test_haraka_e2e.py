"""A real Haraka 3.3.4 with our plugin, reporting to a real sidecar process that
exports to a real OTLP receiver. What an operator checks: a SERVER span per
SMTP transaction in the message's trace (derived from its Message-ID), a log
record per recipient with the reply Haraka gave, refusals by plugin, and the
catalog's mta.inbound.* metrics; personal data reduced to domains."""
from __future__ import annotations

import collections

from otel_mta import ids
from tests.otlp_receiver import attrs

POLICY = ["otel-mta", "test_policy", "rcpt_to.in_host_list", "queue/discard"]


def _spans(rx, name, service="haraka"):
    return [s for res, s in rx.spans() if s.name == name and res.get("service.name") == service]


def _logs(rx, event_name):
    return [(attrs(r.attributes), r) for res, r in rx.log_records() if r.event_name == event_name]


def _total(rx, metric, **match):
    return sum(p.as_int for a, p in rx.last_points(metric) if all(a.get(k) == v for k, v in match.items()))


def test_haraka_inbound_to_a_real_sidecar(haraka_factory, events_sidecar, grpc_receiver):
    sc = events_sidecar(grpc_receiver, env={"OTEL_METRIC_EXPORT_INTERVAL": "500"})
    haraka = haraka_factory(plugins=POLICY, events_url=sc.events_url, env={"YES_REALLY_DO_DISCARD": "1"},
                            config={"otel-mta.ini": f"url={sc.events_url}\n[buffer]\nflush_interval_ms=100\n"
                                                    "[events]\nlog_lines=true\n[transport]\nhealth_interval_ms=1000\n"})
    mid, refused, final = haraka.send("alice@sender.test", ["bob@rcpt.test", "nobody@rcpt.test", "later@rcpt.test"],
                                      message_id="<in-1@Sender.TEST>")
    assert final[0] == 250 and set(refused) == {"nobody@rcpt.test", "later@rcpt.test"}
    _, _, spam = haraka.send("alice@sender.test", ["carol@rcpt.test"], subject="spam here", message_id="<in-2@sender.test>")
    assert spam[0] == 550
    _, _, nomid = haraka.send("", ["bob@rcpt.test"], message_id=None)
    assert nomid[0] == 250
    rx = grpc_receiver.received

    def settled(r):
        return (len(_spans(r, "inbound")) >= 3 and _total(r, "mta.inbound.transactions") >= 3
                and _total(r, "mta.inbound.connections") >= 3 and len(_logs(r, "haraka.rcpt")) >= 5)

    rx.wait_for(settled, timeout=60, what="three inbound transactions, their logs and metrics")
    spans = {attrs(s.attributes)["haraka.transaction.id"]: s for s in _spans(rx, "inbound")}
    by_mid = {attrs(s.attributes).get("mta.message_id"): s for s in spans.values()}

    # the accepted message: a SERVER span in the trace of its Message-ID
    accepted = by_mid["in-1@sender.test"]
    a = attrs(accepted.attributes)
    tid = a["haraka.transaction.id"]
    assert accepted.trace_id == ids.trace_id_for(mid, None)
    assert accepted.span_id == ids.inbound_span_id(tid)
    assert accepted.kind == 2 and accepted.status.code == 0   # SERVER
    assert a["mta.inbound.outcome"] == "accepted" and a["mta.smtp.code"] == 250
    assert a["mta.smtp.response"] == final[1].decode()
    assert a["mta.recipient.count"] == 1 and a["mta.recipient.domain"] == "rcpt.test"
    assert a["mta.sender.domain"] == "sender.test" and a["mta.transport"] == "ESMTP"
    assert a["haraka.connection.id"] == tid.split(".")[0] and a["server.port"] == haraka.port
    assert "mta.client.address" not in a and "mta.sender.address" not in a, "privacy defaults"
    assert {e.name for e in accepted.events} == {"data started", "data received"}
    assert accepted.start_time_unix_nano < accepted.end_time_unix_nano

    # a log record per recipient, with Haraka's reply, in the message's trace
    rcpt_logs = {la["mta.inbound.outcome"]: (la, r) for la, r in _logs(rx, "haraka.rcpt")
                 if la["haraka.transaction.id"] == tid}
    assert set(rcpt_logs) == {"accepted", "refused", "deferred"}
    for outcome, (la, r) in rcpt_logs.items():
        assert r.trace_id == accepted.trace_id and r.span_id == accepted.span_id
        assert la["mta.recipient.domain"] == "rcpt.test"
    la, r = rcpt_logs["refused"]
    assert (la["mta.smtp.code"], la["mta.smtp.response"], la["mta.inbound.plugin"]) == (550, "No such user here",
                                                                                          "test_policy")
    assert r.severity_text == "WARN"
    assert r.body.string_value == f"RCPT refused {tid} to rcpt.test by test_policy: 550 No such user here"
    assert rcpt_logs["deferred"][0]["mta.smtp.response"] == refused["later@rcpt.test"][1].decode().replace(
        "later@rcpt.test", "***@rcpt.test")
    assert not any("nobody@" in r.body.string_value or "later@" in r.body.string_value
                   for _, r in rx.log_records()), "addresses masked by default"

    # refused after the data by a plugin
    s = attrs(by_mid["in-2@sender.test"].attributes)
    assert (s["mta.inbound.outcome"], s["mta.inbound.stage"], s["mta.inbound.plugin"], s["mta.smtp.code"]) == (
        "refused", "data_post", "test_policy", 550)
    # no Message-ID: a trace of its own, keyed by the transaction
    [nomid_span] = [sp for sp in spans.values() if "mta.message_id" not in attrs(sp.attributes)]
    assert nomid_span.trace_id == ids.trace_id_from_key("qid:" + attrs(nomid_span.attributes)["haraka.transaction.id"])

    # Haraka's own log lines, in the trace of their transaction
    lines = [(la, r) for la, r in _logs(rx, "haraka.log") if la.get("haraka.transaction.id") == tid]
    assert lines and all(r.trace_id == accepted.trace_id for _, r in lines)
    assert any("***@rcpt.test" in r.body.string_value for _, r in lines)
    bodies = [r.body.string_value for _, r in _logs(rx, "haraka.log")]
    assert any("connect ip=*** " in b for b in bodies), "the client's address masked (privacy.client: drop)"
    assert not any(" ip=127.0.0.1" in b or "client.otel-mta.test" in b for b in bodies)

    # metrics
    rx.wait_for(lambda r: _total(r, "mta.inbound.transactions") == 3, timeout=10, what="the metric export")
    outcomes = collections.Counter()
    for pa, p in rx.last_points("mta.inbound.transactions"):
        outcomes[pa["mta.inbound.outcome"]] += p.as_int
    assert outcomes == {"accepted": 2, "refused": 1}
    assert _total(rx, "mta.inbound.recipients", **{"mta.inbound.outcome": "accepted"}) == 3
    assert _total(rx, "mta.inbound.refusals", **{"mta.inbound.plugin": "test_policy", "mta.smtp.code": 550}) == 2
    assert _total(rx, "mta.inbound.refusals", **{"mta.inbound.stage": "rcpt", "mta.smtp.code": 450}) == 1
    assert _total(rx, "mta.inbound.connections", **{"mta.inbound.outcome": "accepted"}) == 3
    sizes = {pa["mta.inbound.outcome"]: p.count for pa, p in rx.last_points("mta.inbound.message.size")}
    assert sizes == {"accepted": 2, "refused": 1}
    assert sum(p.count for _, p in rx.last_points("mta.inbound.transaction.duration")) == 3
    # the plugin's own health, from Haraka's process
    rx.wait_for(lambda r: r.last_points("otelmta_plugin_sent"), timeout=15, what="plugin.health")
    assert {pa["plugin.context"] for pa, _ in rx.last_points("otelmta_plugin_sent")} == {"main"}
    assert sc.terminate() == 0
