"""Haraka as a relay, for real: Haraka 3.3.4 with our plugin accepts a message
from a client it relays for and delivers it with its own outbound queue to a
scripted SMTP server that greylists one recipient and lets it through on the
retry (Haraka's 5 s interval). A real sidecar process exports to an OTLP
receiver. The message's trace must end with `message.final`: delivered, both
recipients, the time in queue spanning the retry; and `otel-mta trace-id`
must find that trace from the transaction uuid Haraka gave the client."""
from __future__ import annotations

import collections
import os
import re
import subprocess
import sys

from otel_mta import ids
from tests.otlp_receiver import attrs

RELAY_HELO = "relay.client.test"


def relay_config(sink) -> dict:
    return {"test_policy.ini": f"relay_helo={RELAY_HELO}\nmx={sink.host}:{sink.port}\n",
            "outbound.ini": "local_mx_ok=true\nenable_tls=false\ntemp_fail_intervals=5s\n"}


def queued_as(reply: bytes) -> str:
    """The transaction uuid in Haraka's "250 Message Queued (<uuid>.N)"."""
    return re.search(rb"\(([0-9A-F-]{36}\.\d+)\)", reply).group(1).decode()


def haraka_spans(rx, trace_id):
    out = collections.defaultdict(list)
    for res, s in rx.spans():
        if s.trace_id == trace_id and res.get("service.name") == "haraka":
            out[s.name].append(s)
    return out


def trace_id_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "K8S_"))}
    return subprocess.run([sys.executable, "-m", "otel_mta", "trace-id", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_a_relayed_message_deferred_then_delivered_ends_with_message_final(haraka_factory, smtp_sink, events_sidecar,
                                                                          grpc_receiver):
    smtp_sink.reply("grey@", "451 4.7.1 Greylisted, try again later")
    sc = events_sidecar(grpc_receiver, env={"OTEL_METRIC_EXPORT_INTERVAL": "500"})
    haraka = haraka_factory(plugins=["otel-mta", "test_policy"], events_url=sc.events_url,
                            config=relay_config(smtp_sink))
    mid, refused, final = haraka.send("alice@sender.test", ["bob@dest.test", "grey@dest.test"],
                                      message_id="<relay-e2e@Sender.TEST>", helo=RELAY_HELO)
    assert final[0] == 250 and not refused, final
    tid = queued_as(final[1])
    trace = ids.trace_id_for(mid, None)
    rx = grpc_receiver.received

    # the first attempt: bob delivered, grey greylisted; then the greylisting lets grey through
    smtp_sink.wait_for_refused(1)
    rx.wait_for(lambda r: len(haraka_spans(r, trace)["delivery"]) >= 2, timeout=30, what="the first attempt's spans")
    assert not haraka_spans(rx, trace)["message.final"], "grey is still queued"
    smtp_sink.reply("grey@", "250 2.1.5 OK")
    rx.wait_for(lambda r: haraka_spans(r, trace)["message.final"], timeout=60,
                what="message.final after the retry")
    spans = haraka_spans(rx, trace)
    [inbound] = spans["inbound"]
    [message_final] = spans["message.final"]
    attempts = sorted((attrs(s.attributes)["mta.delivery.outcome"], s.end_time_unix_nano) for s in spans["delivery"])
    assert [o for o, _ in attempts] == ["deferred", "delivered", "delivered"]
    assert len({s.span_id for s in spans["delivery"]}) == 3
    assert all(s.parent_span_id == inbound.span_id for s in spans["delivery"] + [message_final])

    a = attrs(message_final.attributes)
    last_delivery = max(end for _, end in attempts)
    assert a == {"haraka.transaction.id": tid, "mta.message.state": "delivered", "mta.recipient.count": 2,
                 "mta.message.time_in_queue_ms": (last_delivery - inbound.end_time_unix_nano) // 1_000_000,
                 "mta.recipients.delivered": 2, "mta.recipients.rejected": 0, "mta.recipients.dropped": 0}
    assert a["mta.message.time_in_queue_ms"] >= 4000, "queued across Haraka's retry interval"
    assert message_final.span_id == ids.final_span_id(tid) and message_final.status.code == 0
    assert (message_final.start_time_unix_nano, message_final.end_time_unix_nano) == (
        inbound.end_time_unix_nano, last_delivery)
    delivered = [m for m in smtp_sink.wait_for_messages(2) if m.message["Message-ID"] == mid]
    assert sorted(r for m in delivered for r in m.rcpt_tos) == ["bob@dest.test", "grey@dest.test"]

    # the time-in-queue metric, Haraka's
    def time_in_queue(r):
        return [(res, p) for res, m in r.metrics().get("mta.message.time_in_queue", ())
                for p in m.histogram.data_points if res.get("service.name") == "haraka"]

    rx.wait_for(time_in_queue, timeout=15, what="mta.message.time_in_queue")
    res, point = time_in_queue(rx)[-1]
    assert attrs(point.attributes) == {"mta.message.state": "delivered"} and point.count == 1
    assert point.sum * 1000 >= a["mta.message.time_in_queue_ms"] - 1
    assert sc.terminate() == 0


def test_trace_id_of_a_haraka_transaction_from_the_running_sidecar(haraka_factory, smtp_sink, events_sidecar,
                                                                  grpc_receiver):
    sc = events_sidecar(grpc_receiver)
    haraka = haraka_factory(plugins=["otel-mta", "test_policy", "rcpt_to.in_host_list", "queue/discard"],
                            events_url=sc.events_url, env={"YES_REALLY_DO_DISCARD": "1"},
                            config=relay_config(smtp_sink))
    # received (and queued by queue/discard), with and without a Message-ID; one relayed
    _, _, with_mid = haraka.send("alice@sender.test", ["bob@rcpt.test"], message_id="<lookup-1@Sender.TEST>")
    _, _, without = haraka.send("alice@sender.test", ["bob@rcpt.test"], message_id=None)
    _, _, relayed = haraka.send("alice@sender.test", ["carol@dest.test"], message_id="<lookup-2@sender.test>",
                                helo=RELAY_HELO)
    tids = {name: queued_as(reply[1]) for name, reply in
            (("with_mid", with_mid), ("without", without), ("relayed", relayed))}
    rx = grpc_receiver.received

    def exported(r):
        got = {attrs(s.attributes)["haraka.transaction.id"]: s.trace_id.hex() for res, s in r.spans()
               if s.name == "inbound"}
        return got if set(tids.values()) <= set(got) else None

    traces = rx.wait_for(exported, timeout=30, what="the three inbound spans")
    rx.wait_for(lambda r: any(s.name == "delivery" for _, s in r.spans()), timeout=30, what="the relayed delivery")
    endpoint = f"127.0.0.1:{sc.health_port}"

    res = trace_id_cli(tids["with_mid"], "--endpoint", endpoint)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [traces[tids["with_mid"]]] == [ids.trace_id_for("<lookup-1@sender.test>", None).hex()]
    assert f"Haraka transaction {tids['with_mid']}: its Message-ID is known to the sidecar" in res.stderr

    # no Message-ID (Haraka adds none to mail it receives): traced by the transaction uuid, and the sidecar says so
    res = trace_id_cli(tids["without"], "--endpoint", endpoint)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [traces[tids["without"]]] == [ids.trace_id_for(None, tids["without"]).hex()]
    assert "it has no Message-ID, so it is traced by its Haraka transaction" in res.stderr

    # as Haraka's outbound logs name it (<uuid>.N.K, one entry per domain), and in lowercase
    for given in (tids["relayed"] + ".1", tids["relayed"].lower()):
        res = trace_id_cli(given, "--endpoint", endpoint)
        assert res.returncode == 0, (given, res.stderr)
        assert res.stdout.split() == [traces[tids["relayed"]]]

    # a connection uuid names no single message; an unknown transaction says what to do
    res = trace_id_cli(tids["with_mid"].split(".")[0], "--endpoint", endpoint)
    assert res.returncode == 1 and res.stdout == ""
    assert "is a Haraka connection uuid" in res.stderr and f"{tids['with_mid'].split('.')[0]}.N" in res.stderr
    unknown = "0E4C7B41-9A2D-4F10-8B55-7A1C2D3E4F50.1"
    res = trace_id_cli(unknown, "--endpoint", endpoint)
    assert res.returncode == 1 and res.stdout == "" and "Traceback" not in res.stderr
    assert f"does not know Haraka transaction {unknown}" in res.stderr
    assert "the Haraka plugin's transaction events" in res.stderr
    assert f"its trace id is {ids.trace_id_for(None, unknown).hex()} (traced by its Haraka transaction)" in res.stderr
    assert "haraka.transaction.id=" + unknown in res.stderr
    assert sc.terminate() == 0
