"""The ZoneMTA plugin (loaded by ZoneMTA's real plugin host, hooks run with
ZoneMTA-shaped arguments: plugin_driver.js) -> the real sidecar process ->
a real OTLP/gRPC receiver. Also what the plugin does when that sidecar is
down or pushes back, and that it recovers."""
from __future__ import annotations

import time

from otel_mta import ids
from tests.conftest import free_port
from tests.otlp_receiver import GrpcReceiver, attrs

QID = "18c5f3d2a3e0007777"
MID = "<20261126.otel.e2e@Example.TEST>"
TRACE = ids.trace_id_for(MID, None)


def _by(rx, action):
    return [r for _, r in rx.log_records() if attrs(r.attributes).get("mta.action") == action]


def test_plugin_to_real_sidecar_to_otlp_receiver(plugin_driver, events_sidecar, grpc_receiver):
    sc = events_sidecar(grpc_receiver)
    drv = plugin_driver()
    fast = dict(url=sc.events_url, flushIntervalMs=50, healthIntervalMs=1000)
    receiver, sender, main = (drv.load(c, **fast) for c in ("receiver", "sender", "main"))
    drv.call("message", handler=receiver, queue_id=QID, message_id=MID,
             recipients=["bob@rcpt.example", "carol@other.example"])
    drv.call("deliver", handler=sender, queue_id=QID, seq="001", message_id=MID, recipient="bob@rcpt.example",
             outcome="ACCEPTED", gap_ms=20)
    drv.call("release", handler=main, queue_id=QID, seq="001", status="delivered")
    drv.call("deliver", handler=sender, queue_id=QID, seq="002", message_id=MID, recipient="carol@other.example",
             outcome="DEFERRED", defcount=1, gap_ms=20)
    assert all(drv.call("drain", timeout_ms=5000)["drained"] for _ in range(1))
    rx = grpc_receiver.received

    attempt_ok = ids.attempt_span_id(QID, "001", "ACCEPTED", 0)
    attempt_later = ids.attempt_span_id(QID, "002", "DEFERRED", 1)

    def complete(r):
        spans = {s.span_id: s for _, s in r.spans()}
        return (len(_by(r, "DEFERRED")) and ids.phase_span_id(attempt_later, "smtp") in spans
                and ids.phase_span_id(attempt_ok, "smtp") in spans and ids.root_span_id(QID) in spans
                and r.last_points("otelmta_plugin_sent"))

    rx.wait_for(complete, timeout=20, what="logs, attempt spans with phases, the root span, plugin health")
    # one trace for the message: its id derives from the Message-ID
    logs = [r for _, r in rx.log_records()]
    assert {attrs(r.attributes)["mta.action"] for r in logs} == {"QUEUED", "ACCEPTED", "DEFERRED"}
    assert len(logs) == 3 and {r.trace_id for r in logs} == {TRACE}
    spans = {s.span_id: s for _, s in rx.spans()}
    assert {s.trace_id for s in spans.values()} == {TRACE}
    root = spans[ids.root_span_id(QID)]
    # the second recipient was deferred: the root ends as queued, later attempts still join the trace
    assert attrs(root.attributes)["mta.message.state"] == "queued"
    for attempt_id, names in ((attempt_ok, {"connect", "smtp"}), (attempt_later, {"connect", "smtp"})):
        attempt = spans[attempt_id]
        assert attempt.name == "delivery" and attempt.parent_span_id == root.span_id
        children = {s.name: s for s in spans.values() if s.parent_span_id == attempt_id}
        assert set(children) == names
        connect, smtp = children["connect"], children["smtp"]
        # the plugin's timing: connect (>= 20 ms in the driver) then the SMTP transaction (>= 20 ms)
        assert connect.end_time_unix_nano - connect.start_time_unix_nano >= 15_000_000
        assert smtp.start_time_unix_nano >= connect.end_time_unix_nano
        assert attrs(connect.attributes)["server.address"] == "mx.example.net"
        assert attrs(connect.attributes)["tls.established"] is True
    assert spans[ids.phase_span_id(attempt_later, "smtp")].status.code == 2   # the 451 failed the transaction
    assert attrs(spans[ids.phase_span_id(attempt_ok, "smtp")].attributes)["mta.smtp.data_ms"] == 40
    # metrics
    outcomes = {a["mta.delivery.outcome"]: p.as_int for a, p in rx.last_points("mta.delivery.attempts")}
    assert outcomes == {"delivered": 1, "deferred": 1}
    sent = {a["plugin.context"]: p.as_int for a, p in rx.last_points("otelmta_plugin_sent")}
    assert set(sent) >= {"receiver", "sender"} and all(v > 0 for v in sent.values())
    accepted = {a["receiver"]: p.as_int for a, p in rx.last_points("otelmta_receiver_accepted_records")}
    assert accepted["events"] >= 10
    stats = {c: drv.call("stats", handler=h) for c, h in (("receiver", receiver), ("sender", sender))}
    assert all(s["failed"] == 0 and s["dropped"] == 0 for s in stats.values()), stats
    assert sc.terminate() == 0


def test_sidecar_down_then_up_the_plugin_buffers_drops_past_its_limit_and_recovers(
        plugin_driver, events_sidecar, grpc_receiver):
    port = free_port()
    drv = plugin_driver()
    h = drv.load("main", url=f"http://127.0.0.1:{port}", bufferSize=100, maxBatch=20, flushIntervalMs=50,
                 retryBaseMs=20, retryMaxMs=200, maxRetries=1000, requestTimeoutMs=1000, healthIntervalMs=600000)
    drv.call("entries", handler=h, queue_id=QID, count=150)   # the sidecar is not there yet
    drv.call("sleep", ms=600)
    down = drv.call("stats", handler=h)
    # bounded: at most bufferSize waiting plus the batch being retried; the rest dropped, oldest first, counted
    assert down["buffered"] <= 100 + 20 and down["retries"] > 0 and down["sent"] == 0
    assert down["dropped"] == 150 - down["buffered"] and down["failed"] == 0
    sc = events_sidecar(grpc_receiver, port=port)
    assert drv.call("drain", timeout_ms=10000)["drained"]
    drv.call("entries", handler=h, queue_id=QID, count=30)    # and traffic goes on
    assert drv.call("drain", timeout_ms=10000)["drained"]
    up = drv.call("stats", handler=h)
    assert up["sent"] == 180 - up["dropped"] and up["failed"] == 0 and up["dropped"] == down["dropped"]
    rx = grpc_receiver.received
    rx.wait_for(lambda r: len(_by(r, "DELETED")) >= up["sent"], timeout=15, what="every sent entry exported")
    time.sleep(0.5)
    assert len(_by(rx, "DELETED")) == up["sent"], "each event exactly once (retries repeat ids: duplicates dropped)"
    # the plugin's own count of its losses reaches the backend
    drv.call("health", handler=h)
    drv.call("drain", timeout_ms=5000)
    rx.wait_for(lambda r: r.last_points("otelmta_plugin_dropped"), timeout=10, what="plugin health")
    [(a, point)] = rx.last_points("otelmta_plugin_dropped")
    assert a["plugin.context"] == "main" and point.as_int == up["dropped"]
    assert sc.terminate() == 0


def test_a_real_sidecar_that_cannot_export_pushes_back_and_nothing_is_lost(
        plugin_driver, events_sidecar, tmp_path):
    """The collector is down and the sidecar's export queue fills: the events
    endpoint answers 503 (Retry-After), the plugin keeps the batches and
    retries; when the collector is back everything arrives, once."""
    collector_port = free_port()
    cfg = tmp_path / "otel-mta.yaml"
    cfg.write_text("exporter:\n  queue_size: 256KiB\n  initial_backoff: 100ms\n  max_backoff: 300ms\n"
                   "batch:\n  max_batch: 64\n")
    sc = events_sidecar(env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
                             "OTEL_METRIC_EXPORT_INTERVAL": "600000"}, config=cfg)
    drv = plugin_driver()
    h = drv.load("main", url=sc.events_url, maxBatch=50, flushIntervalMs=20, retryBaseMs=50, retryMaxMs=300,
                 maxRetries=1000, healthIntervalMs=600000)
    total = 0
    deadline = time.time() + 30
    while time.time() < deadline:
        drv.call("entries", handler=h, queue_id=QID, count=200)
        total += 200
        drv.call("sleep", ms=100)
        if drv.call("stats", handler=h)["retries"] > 0:
            break
    stats = drv.call("stats", handler=h)
    assert stats["retries"] > 0, "the sidecar never pushed back"
    receiver = GrpcReceiver(collector_port)   # the collector comes back
    try:
        assert drv.call("drain", timeout_ms=20000)["drained"]
        final = drv.call("stats", handler=h)
        assert final["dropped"] == 0 and final["failed"] == 0 and final["sent"] == total
        rx = receiver.received
        rx.wait_for(lambda r: len(_by(r, "DELETED")) >= total, timeout=30, what="all entries exported")
        time.sleep(0.5)
        assert len(_by(rx, "DELETED")) == total
        assert sc.terminate() == 0
        requests = {a["http.response.status_code"]: p.as_int for a, p in rx.last_points("otelmta_events_requests")}
        assert requests.get(503, 0) > 0 and requests[200] > 0
        failed = rx.last_points("otelmta_exporter_send_failed_log_records")
        assert not failed or all(p.as_int == 0 for _, p in failed)
    finally:
        receiver.stop()


def test_a_slow_sidecar_whose_answer_times_out_gets_the_batch_again_and_keeps_it_once(
        plugin_driver, events_sidecar, grpc_receiver, tmp_path):
    """10,000 delivery entries in one ~6 MB batch take the sidecar well over the
    plugin's 100 ms request timeout (gunzip, parse, map, encode): the plugin
    gives up waiting and sends the same body again; the sidecar had taken it
    already and drops the repeats by event id. Each entry is exported once."""
    cfg = tmp_path / "otel-mta.yaml"
    cfg.write_text("sources:\n  events:\n    max_body: 32MiB\n")
    sc = events_sidecar(grpc_receiver, config=cfg)
    drv = plugin_driver()
    h = drv.load("sender", url=sc.events_url, requestTimeoutMs=100, maxBatch=10000, maxBatchBytes=32 << 20,
                 bufferSize=20000, flushIntervalMs=20, retryBaseMs=50, retryMaxMs=200, maxRetries=50,
                 healthIntervalMs=600000)
    drv.call("accepted", handler=h, queue_id="18c5f3d2a3e", count=10000)
    assert drv.call("drain", timeout_ms=60000)["drained"]
    stats = drv.call("stats", handler=h)
    assert stats["retries"] >= 1, "the sidecar answered 10,000 entries within 100 ms: nothing was tested"
    assert stats["sent"] == 10000 and stats["failed"] == 0
    rx = grpc_receiver.received
    rx.wait_for(lambda r: len(_by(r, "ACCEPTED")) >= 10000, timeout=60, what="the entries")
    assert sc.terminate() == 0
    assert len(_by(rx, "ACCEPTED")) == 10000
    assert len([s for _, s in rx.spans() if s.name == "delivery"]) == 10000
    dups = {a["reason"]: p.as_int for a, p in rx.last_points("otelmta_receiver_deduplicated_records")}
    assert dups["duplicate_id"] >= 10000
