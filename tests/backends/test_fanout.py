"""The fan-out on running backends (conftest.py starts the whole path): one
message sent through a real ZoneMTA is asked back from each backend the way an
operator would; and while Jaeger is down for 30 s every trace waits in the
gateway's on-disk queue (which survives a gateway restart) and arrives when
Jaeger is back, while VictoriaLogs, Prometheus and VictoriaMetrics keep
receiving."""
from __future__ import annotations

import time

from otel_mta import ids
from tests.backends.conftest import RECIPIENT, Fanout, wait_until


def _tags(span: dict) -> dict:
    return {t["key"]: t["value"] for t in span.get("tags", [])}


def _value(result: list) -> float:
    return sum(float(r["value"][1]) for r in result)


def test_one_message_is_answered_by_every_backend(fanout: Fanout):
    f = fanout
    msg = f.send(1)
    f.sink.wait_for_messages(1, timeout=60)

    # Jaeger: the trace by the id derived from the Message-ID, root and attempt spans
    spans = wait_until(lambda: f.delivered_trace(msg) and "smtp" in f.jaeger_spans(msg) and f.jaeger_spans(msg),
                       90, f"trace {msg.trace_id} with its root, attempt and smtp spans in Jaeger")
    [root], [attempt] = spans["message"], spans["delivery"]
    qid = _tags(root)["mta.queue_id"]
    assert root["traceID"] == attempt["traceID"] == msg.trace_id
    assert root["spanID"] == ids.root_span_id(qid).hex()
    assert _tags(root)["mta.message.state"] == "delivered"
    assert [(r["refType"], r["spanID"]) for r in attempt["references"]] == [("CHILD_OF", root["spanID"])]
    assert _tags(attempt)["mta.delivery.outcome"] == "delivered" and _tags(attempt)["mta.zone"] == "default"
    [smtp] = spans["smtp"]   # the plugin's phase, a child of the attempt
    assert [r["spanID"] for r in smtp["references"]] == [attempt["spanID"]]
    trace = f.jaeger.trace(msg.trace_id)
    assert trace["processes"][root["processID"]]["serviceName"] == "zonemta"

    # VictoriaLogs: the delivery's log records by trace id, and the same records by queue id
    def records_by_trace():
        rows = f.log_records(msg)
        return rows if {"QUEUED", "ACCEPTED"} <= {r.get("mta.action") for r in rows} else None

    by_trace = wait_until(records_by_trace, 60, "QUEUED and ACCEPTED records in VictoriaLogs by trace id")
    assert {r["mta.queue_id"] for r in by_trace} == {qid}
    by_queue = f.victorialogs.query(f'"mta.queue_id":="{qid}"')
    assert sorted((r["_time"], r["_msg"]) for r in by_queue) == sorted((r["_time"], r["_msg"]) for r in by_trace)
    assert {r["trace_id"] for r in by_queue} == {msg.trace_id}
    accepted = next(r for r in by_queue if r["mta.action"] == "ACCEPTED")
    assert accepted["service.name"] == "zonemta" and accepted["severity_text"] == "INFO"
    assert RECIPIENT not in accepted["_msg"], "recipients are masked by default"

    # Prometheus (remote write) and VictoriaMetrics (OTLP): the attempt under the
    # Prometheus names the translation produces, for its zone and outcome
    attempts = 'mta_delivery_attempts_total{mta_zone="default", mta_delivery_outcome="delivered"}'
    for backend in (f.prometheus, f.victoriametrics):
        result = wait_until(lambda b=backend: b.query(attempts), 60, f"{attempts} in {backend.name}")
        assert _value(result) == 1, (backend.name, result)
        assert {r["metric"]["mta_recipient_domain"] for r in result} == {"rcpt.test"}
    # where each puts the resource: Prometheus in job/instance (+ target_info), VictoriaMetrics in labels
    assert {r["metric"]["job"] for r in f.prometheus.query(attempts)} == {"zonemta"}
    assert {r["metric"]["service_name"] for r in f.victoriametrics.query(attempts)} == {"zonemta"}

    # ... and the pollers' metrics: ZoneMTA's API (queue depth, its own counters),
    # its MongoDB (on FerretDB), its Redis, and the host
    pollers = ['mta_queue_size{mta_zone="default", mta_queue_state="active"}',
               'zonemta_message_push_total', 'mongodb_health_ratio',
               'redis_uptime_seconds_total', 'redis_clients_connected',
               'system_cpu_time_seconds_total', 'process_threads',
               'otelmta_poller_up_ratio{poller="redis"}']
    for backend in (f.prometheus, f.victoriametrics):
        for expr in pollers:
            wait_until(lambda b=backend, e=expr: b.query(e), 60, f"{expr} in {backend.name}")
    up = f.prometheus.query('otelmta_poller_up_ratio')
    assert {r["metric"]["poller"]: float(r["value"][1]) for r in up} == {
        "zonemta_api": 1, "mongodb": 1, "redis": 1, "host": 1}


OUTAGE_S = 30.0


def test_jaeger_down_for_30s_loses_no_trace_and_holds_up_no_other_backend(fanout: Fanout):
    f = fanout
    first = f.send(0, "outage")
    wait_until(lambda: f.delivered_trace(first), 90, "the first trace in Jaeger")
    attempts = 'sum(mta_delivery_attempts_total{mta_delivery_outcome="delivered"})'
    wait_until(lambda: _value(f.prometheus.query(attempts)) >= 1, 60, "the first attempt in Prometheus")

    f.jaeger.stop()
    down_at = time.monotonic()
    sent = [first]
    seen_while_down = {"victorialogs": set(), "prometheus": 0.0, "victoriametrics": 0.0}
    queued = 0.0
    n = 1
    while time.monotonic() - down_at < OUTAGE_S:
        sent.append(f.send(n, "outage"))
        n += 1
        queued = max(queued, f.gateway_metric("otelcol_exporter_queue_size", exporter="otlp_grpc/jaeger") or 0)
        # the other backends keep receiving while Jaeger is down
        for m in sent[1:]:
            if m.trace_id not in seen_while_down["victorialogs"] and \
                    "ACCEPTED" in {r.get("mta.action") for r in f.log_records(m)}:
                seen_while_down["victorialogs"].add(m.trace_id)
        for name in ("prometheus", "victoriametrics"):
            seen_while_down[name] = max(seen_while_down[name], _value(getattr(f, name).query(attempts)))
        time.sleep(2.5)
    # while Jaeger was down: logs of messages sent during the outage arrived, and
    # both metric backends counted their attempts
    assert len(seen_while_down["victorialogs"]) >= len(sent) // 2, seen_while_down
    assert seen_while_down["prometheus"] > 1 and seen_while_down["victoriametrics"] > 1, seen_while_down
    # the gateway held Jaeger's spans in its queue, and dropped none
    assert queued > 0
    for failed in ("otelcol_exporter_send_failed_spans_total", "otelcol_exporter_enqueue_failed_spans_total"):
        assert not f.gateway_metric(failed, exporter="otlp_grpc/jaeger"), failed

    # the queue is on disk: a gateway restart while Jaeger is still down keeps it
    f.sink.wait_for_messages(len(sent), timeout=60)
    time.sleep(3)      # the last deliveries' spans reach the gateway (the sidecar exports every 100 ms)
    f.restart_gateway()
    restored = wait_until(lambda: f.gateway_metric("otelcol_exporter_queue_size", exporter="otlp_grpc/jaeger"),
                          30, "the Jaeger exporter's queue restored from disk")
    assert restored > 0

    f.jaeger.start()                                  # the same ports, the same Badger files
    assert time.monotonic() - down_at >= OUTAGE_S

    # every trace arrives once Jaeger is back (the exporter retries at most 30 s apart, +50 % jitter)
    wait_until(lambda: all(f.delivered_trace(m) for m in sent), 120, "every trace in Jaeger after the outage",
               every=2)
    assert f.gateway_metric("otelcol_exporter_queue_size", exporter="otlp_grpc/jaeger") == 0
    assert f.gateway_metric("otelcol_exporter_sent_spans_total", exporter="otlp_grpc/jaeger") > 0
    for m in sent:
        spans = f.delivered_trace(m)
        assert len(spans["message"]) == 1 and len(spans["delivery"]) == 1, (m, {k: len(v) for k, v in spans.items()})
    # and nothing was lost or counted twice elsewhere
    for m in sent:
        assert [r["mta.action"] for r in f.log_records(m)].count("ACCEPTED") == 1, m
    for backend in (f.prometheus, f.victoriametrics):
        wait_until(lambda b=backend: _value(b.query(attempts)) == len(sent), 60,
                   f"{len(sent)} delivered attempts in {backend.name}")
