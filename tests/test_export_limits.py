"""Export behind a receiver's limits: requests sized to the receiver and split
when it still refuses one for its size, the OTLP retry rules (Retry-After,
RetryInfo, permanent errors), and one lane per signal, so one backend's
trouble does not hold back the others."""
from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_mta import catalog
from otel_mta.export import split
from otel_mta.export.exporter import Exporter
from otel_mta.export.queue import ExportQueue
from otel_mta.export.senders import GrpcSender, HttpSender, http_retry_delay
from otel_mta.export.spool import Spool
from otel_mta.resources import Resources
from otel_mta.signals import logs as L, traces as T, wire
from otel_mta.signals.metrics import MetricStore
from tests.otlp_receiver import GrpcReceiver, HttpReceiver

RES_A = wire.resource({"service.name": "zonemta", "host.name": "mx1"})
RES_B = wire.resource({"service.name": "wildduck"})
SCOPE = wire.scope("t", "1")


def records(tag: str, n: int, pad: int = 0) -> list[bytes]:
    return [L.encode_log(1, 1, L.INFO, f"{tag}:{i}:" + "x" * pad, b"") for i in range(n)]


def request(tag: str, n: int, pad: int = 0) -> bytes:
    return wire.request([(RES_A, SCOPE, records(tag, n, pad))])


def bodies(rx) -> list[str]:
    return [r.body.string_value.rstrip("x").rstrip(":") for _, r in rx.log_records()]


def receiver(kind: str, max_size: int | None = None):
    if kind == "grpc":
        return GrpcReceiver(max_receive=max_size) if max_size else GrpcReceiver()
    rx = HttpReceiver()
    rx.received.max_body = max_size
    return rx


def sender(kind: str, endpoint: str):
    return GrpcSender(endpoint, {}, 5.0) if kind == "grpc" else HttpSender(endpoint, {}, 5.0)


# -- splitting ------------------------------------------------------------------
def test_halves_keep_every_record_with_its_resource_and_scope():
    payload = wire.request([(RES_A, SCOPE, records("a", 5, pad=100)), (RES_B, SCOPE, records("b", 3))])
    halves = split.halve("logs", payload)
    assert [n for _, n in halves] == [4, 4] or sum(n for _, n in halves) == 8
    seen = []
    for part, n in halves:
        req = ExportLogsServiceRequest.FromString(part)
        assert sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs) == n
        for rl in req.resource_logs:
            assert rl.resource.attributes and rl.scope_logs[0].scope.name == "t"
            service = rl.resource.attributes[0].value.string_value
            seen += [(service, r.body.string_value.rstrip("x")) for sl in rl.scope_logs for r in sl.log_records]
    assert seen == [("zonemta", f"a:{i}:") for i in range(5)] + [("wildduck", f"b:{i}:") for i in range(3)]
    # one record cannot be halved
    assert split.halve("logs", request("c", 1)) == [(request("c", 1), 1)]


def test_a_large_metric_collection_is_split_between_data_points():
    """MetricStore.collect makes one request of every series; beyond the cap the
    exporter splits it, a metric's points across requests, its metadata kept."""
    store = MetricStore(catalog.load(), max_series=20_000)
    own = Resources().own
    hist = store.histogram("mta.delivery.duration")
    for i in range(3000):
        store.counter("otelmta_receiver_accepted_records").add(i, own, (f"r{i}", "udp"))
        hist.record(0.5, own, (f"zone{i}", "delivered"))
    payload, points = store.collect()
    assert len(payload) > 256 << 10
    parts = split.fit("metrics", payload, 64 << 10)
    assert len(parts) > 4 and all(len(p) <= 64 << 10 for p, _ in parts)
    assert sum(n for _, n in parts) == points
    seen = {}
    for part, n in parts:
        req = ExportMetricsServiceRequest.FromString(part)
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                assert sm.scope.name == "otel-mta"
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    data = getattr(m, kind)
                    if kind in ("sum", "histogram"):
                        assert data.aggregation_temporality == 2   # cumulative, on every part
                    if kind == "sum":
                        assert data.is_monotonic
                    seen[m.name] = seen.get(m.name, 0) + len(data.data_points)
                    assert m.unit
    assert seen["otelmta_receiver_accepted_records"] == 3000
    assert seen["mta.delivery.duration"] == 3000


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_a_receiver_that_refuses_large_requests_gets_them_in_halves(kind):
    """Behind a 64 KiB limit, with a cap the receiver does not honour: refused
    requests are split until they pass; one record too large even alone is
    dropped and counted, and what comes after it arrives."""
    rx = receiver(kind, max_size=64 << 10)
    exp = Exporter(sender(kind, rx.endpoint), ExportQueue(16 << 20), 0.05, 0.2, max_request_size=1 << 20)
    exp.start()
    try:
        exp.submit("logs", request("a", 1000, pad=200), 1000)   # ~230 KB
        exp.submit("logs", request("huge", 1, pad=100_000), 1)  # over the limit alone
        exp.submit("logs", request("b", 10), 10)
        rx.received.wait_for(lambda r: exp.stats.sent["logs"] == 1010, what="every record that fits")
        # several requests are in flight at once: complete, each once, not in order
        assert sorted(bodies(rx.received)) == sorted([f"a:{i}" for i in range(1000)] + [f"b:{i}" for i in range(10)])
        assert exp.stats.failed == {("logs", "too_large"): 1}
        assert exp.stats.sent["logs"] == 1010 and exp.stats.splits >= 3 and exp.stats.retries == 0
        assert all(len(req.SerializeToString()) <= 64 << 10 for _, req in rx.received.requests["logs"])
        if kind == "http":
            assert rx.received.too_large >= 4   # 413s, as nginx answers them
    finally:
        exp.stop(2)
        rx.stop()


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_requests_over_the_cap_are_split_before_they_are_sent(kind):
    rx = receiver(kind, max_size=64 << 10)
    exp = Exporter(sender(kind, rx.endpoint), ExportQueue(16 << 20), 0.05, 0.2, max_request_size=60 << 10)
    exp.start()
    try:
        exp.submit("logs", request("a", 1000, pad=200), 1000)
        rx.received.wait_for(lambda r: exp.stats.sent["logs"] == 1000, what="every record")
        assert sorted(bodies(rx.received)) == sorted(f"a:{i}" for i in range(1000))
        assert exp.stats.splits >= 3 and not exp.stats.failed
        if kind == "http":
            assert rx.received.too_large == 0   # none was refused
    finally:
        exp.stop(2)
        rx.stop()


def test_the_cap_is_configurable_and_reaches_the_batchers():
    from otel_mta import config
    from otel_mta.pipeline import Pipeline
    assert config.load(environ={}).exporter.max_request_size == 512 << 10
    s = config.load(environ={"OTEL_MTA_EXPORTER_MAX_REQUEST_SIZE": "1MiB"})
    assert s.exporter.max_request_size == 1 << 20
    p = Pipeline(s, lambda *a: None)
    assert p.logs.max_bytes == p.spans.max_bytes == 1 << 20
    with pytest.raises(config.ConfigError, match="max_request_size.*OTEL_MTA_EXPORTER_MAX_REQUEST_SIZE"):
        config.load(environ={"OTEL_MTA_EXPORTER_MAX_REQUEST_SIZE": "1kB"})


# -- the OTLP retry rules ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_the_delay_the_receiver_asks_for_is_honoured(kind):
    rx = receiver(kind)
    rx.received.fail_with = grpc.StatusCode.UNAVAILABLE if kind == "grpc" else 503
    rx.received.retry_after = 2.0
    rx.received.fail_calls = {"logs": 1}
    exp = Exporter(sender(kind, rx.endpoint), ExportQueue(1 << 20), 0.05, 0.1)
    exp.start()
    try:
        t0 = time.monotonic()
        exp.submit("logs", request("a", 3), 3)
        rx.received.wait_for(lambda r: exp.stats.sent["logs"] == 3, what="the retried request")
        assert time.monotonic() - t0 >= 1.9   # not the 0.05 s backoff
        assert exp.stats.retries == 1 and not exp.stats.failed
    finally:
        exp.stop(2)
        rx.stop()


def test_permanent_errors_are_logged_once_per_interval(caplog):
    rx = GrpcReceiver()
    rx.received.fail_with = grpc.StatusCode.PERMISSION_DENIED
    exp = Exporter(GrpcSender(rx.endpoint, {}, 5.0), ExportQueue(1 << 20), 0.05, 0.1)
    exp.start()
    try:
        with caplog.at_level("ERROR", logger="otel_mta.export"):
            for n in range(6):
                exp.submit("logs", request(str(n), 2), 2)
            rx.received.wait_for(lambda r: exp.stats.failed.get(("logs", "permanent_error")) == 12,
                                 what="six refusals")
        lines = [r.getMessage() for r in caplog.records if "permanent error" in r.getMessage()]
        assert len(lines) == 1 and "PERMISSION_DENIED" in lines[0]
        assert exp.stats.retries == 0 and rx.received.calls == 6
    finally:
        exp.stop(1)
        rx.stop()


def test_resource_exhausted_with_retry_info_is_retried_not_split():
    """A server that is busy (RetryInfo) gets the same request again after its delay."""
    rx = GrpcReceiver()
    rx.received.fail_with = grpc.StatusCode.RESOURCE_EXHAUSTED
    rx.received.retry_after = 0.5
    rx.received.fail_calls = {"logs": 2}
    exp = Exporter(GrpcSender(rx.endpoint, {}, 5.0), ExportQueue(1 << 20), 0.05, 0.1)
    exp.start()
    try:
        exp.submit("logs", request("a", 4), 4)
        rx.received.wait_for(lambda r: exp.stats.sent["logs"] == 4, what="the retried request")
        assert exp.stats.splits == 0 and exp.stats.retries == 2 and len(rx.received.requests["logs"]) == 1
    finally:
        exp.stop(2)
        rx.stop()


async def test_what_each_http_answer_means(http_receiver):
    """OTLP/HTTP: 429, 502, 503, 504 and an unreachable collector are retried;
    413 is split; anything else is permanent."""
    from tests.conftest import free_port
    s = HttpSender(http_receiver.endpoint, {}, 5.0)
    rx = http_receiver.received
    seen = {}
    try:
        for status in (400, 401, 404, 413, 429, 500, 502, 503, 504):
            rx.fail_with = status
            r = await s.send_async("logs", request("a", 1))
            seen[status] = ("split" if r.too_large else "retry" if r.retryable else "drop")
            assert not r.ok and r.error.startswith(f"HTTP {status}")
        rx.fail_with = None
        assert (await s.send_async("logs", request("a", 1))).ok
    finally:
        await s.aclose()
    assert seen == {400: "drop", 401: "drop", 404: "drop", 413: "split", 429: "retry", 500: "drop",
                    502: "retry", 503: "retry", 504: "retry"}
    down = HttpSender(f"http://127.0.0.1:{free_port()}", {}, 5.0)
    try:
        r = await down.send_async("logs", request("a", 1))
    finally:
        await down.aclose()
    assert r.retryable and "cannot connect" in r.error and "Connection refused" in r.error


def test_retry_after_as_seconds_or_as_a_date():
    assert http_retry_delay("7") == 7.0
    assert http_retry_delay("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert http_retry_delay("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0   # in the past
    assert http_retry_delay("999999") == 300.0   # absurd: capped
    assert http_retry_delay("soon") is None and http_retry_delay(None) is None


# -- one lane per signal --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["grpc", "http"])
async def test_a_backend_down_for_one_signal_does_not_hold_back_the_others(kind):
    rx = receiver(kind)
    rx.received.fail_with = grpc.StatusCode.UNAVAILABLE if kind == "grpc" else 503
    rx.received.fail_signals = {"traces"}
    exp = Exporter(sender(kind, rx.endpoint), ExportQueue(8 << 20), 0.05, 0.2)
    exp.start(asyncio.get_running_loop())
    span = T.encode_span(b"\x01" * 16, b"\x02" * 8, None, "delivery", wire.SPAN_KIND_CLIENT, 1, 2, {})
    try:
        for n in range(20):   # traces first: in one queue they would stand in front of everything
            exp.submit("traces", wire.request([(RES_A, SCOPE, [span])]), 1)
        for _ in range(200):   # the first refusal
            if exp.failing:
                break
            await asyncio.sleep(0.05)
        assert not exp.healthy and exp.failing == ["traces"]
        exp.submit("logs", request("a", 5), 5)
        exp.submit("metrics", ExportMetricsServiceRequest().SerializeToString(), 0)
        await asyncio.to_thread(rx.received.wait_for, lambda r: len(r.log_records()) == 5 and r.requests["metrics"],
                                what="logs and metrics while traces fail", timeout=5)
        assert not rx.received.requests["traces"] and exp.stats.retries > 0
        rx.received.fail_with = None   # the traces backend is back: the 20 requests follow, in order
        await asyncio.to_thread(rx.received.wait_for, lambda r: exp.stats.sent["traces"] == 20,
                                what="the held traces", timeout=10)
        assert exp.stats.sent == {"logs": 5, "traces": 20, "metrics": 0} and not exp.stats.failed
        assert exp.healthy and exp.failing == []
    finally:
        await exp.stop_async(2)
        rx.stop()


def test_a_failing_lane_cannot_take_all_the_memory():
    q = ExportQueue(8000)
    taken = sum(q.put("traces", b"t" * 100, 1) for _ in range(100))
    assert taken == 60                       # 3/4 of the budget
    assert all(q.put("logs", b"l" * 100, 1) for _ in range(10))
    assert all(q.put("metrics", b"m" * 100, 1) for _ in range(10))
    assert q.get("logs") == ("logs", b"l" * 100, 1) and q.get("traces")[0] == "traces"


def test_a_failing_lane_cannot_take_all_the_spool(tmp_path):
    spool = Spool(tmp_path, 80_000)
    q = ExportQueue(1000, spool)
    noise = bytes(range(256)) * 4   # zlib cannot shrink it much
    while q.put("traces", noise, 1):
        pass
    assert spool.size <= 60_000 + 2000
    assert all(q.put("logs", noise, 1) for _ in range(5)) and q.spooled("logs") >= 4


def test_a_spool_of_an_older_version_is_sorted_into_the_lanes(tmp_path):
    """Older versions kept one FIFO for all signals in <dir>/segment-*.spool."""
    import struct
    import zlib
    legacy = b""
    for signal, code, payload in (("logs", 0, request("a", 1)), ("traces", 1, b"span"), ("logs", 0, request("b", 1))):
        data = zlib.compress(payload, 1)
        legacy += struct.pack("<IBI", len(data), code, 1) + data
    (tmp_path / "segment-001000000000.spool").write_bytes(legacy)
    spool = Spool(tmp_path, 1 << 20)
    assert not list(tmp_path.glob("segment-*.spool"))
    assert [spool.pop("logs")[1], spool.pop("logs")[1], spool.pop("logs")] == [request("a", 1), request("b", 1), None]
    assert spool.pop("traces") == ("traces", b"span", 1)


# -- stopping ------------------------------------------------------------------------
async def test_stop_returns_within_its_budget_and_keeps_what_was_in_flight(tmp_path):
    """A receiver that never answers in time: stop_async gives up at its
    deadline, and the request it was sending goes back to the spool."""
    rx = GrpcReceiver()
    rx.received.delay_s = 8.0
    exp = Exporter(GrpcSender(rx.endpoint, {}, 30.0), ExportQueue(1 << 20, Spool(tmp_path, 1 << 20)), 0.05, 0.1)
    exp.start(asyncio.get_running_loop())
    try:
        exp.submit("logs", request("a", 2), 2)
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        await exp.stop_async(0.5)
        assert time.monotonic() - t0 < 5.0   # its budget + 1 s, not the receiver's 8 s
        again = Spool(tmp_path, 1 << 20)
        assert again.pop("logs") == ("logs", request("a", 2), 2)
        assert not exp.stats.failed
    finally:
        rx.stop()


# -- the sidecar behind a 1 MiB limit --------------------------------------------------
@pytest.mark.parametrize("via", ["nginx", "grpc"])
def test_the_sidecar_behind_a_1_mib_limit_loses_nothing(sidecar, js_encode, tmp_path, via):
    """Default settings; 2,048 of these records make ~1.6 MB, which nginx
    (client_max_body_size 1m, 413) and a gRPC server limited to 1 MiB refuse:
    earlier versions lost them all (HTTP) or stopped exporting (gRPC)."""
    import json
    from pathlib import Path
    from tests.stack.nginx import NginxProxy
    entries = [json.loads(line) for line in
               (Path(__file__).parent / "fixtures" / "remote_log" / "entries.jsonl").read_text().splitlines()]
    deferred = next(e for e in entries if e["action"] == "DEFERRED")
    reply = "451 4.7.1 Greylisted, please try again later " + "x" * 260
    burst = [{**deferred, "id": f"18c5f3d2a3e{n:07x}", "seq": "001", "response": reply} for n in range(6000)]
    later = [{**deferred, "id": "18c5f3d2a3effffff", "seq": "001", "response": "451 later"}]
    proxy = None
    if via == "nginx":
        rx = HttpReceiver()
        proxy = NginxProxy(tmp_path / "nginx", rx.port, "1m")
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": proxy.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    else:
        rx = GrpcReceiver(max_receive=1 << 20)
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint}
    try:
        sc = sidecar({**env, "OTEL_BLRP_SCHEDULE_DELAY": "500"})
        sc.send(js_encode(burst), pause_every=50)
        rx.received.wait_for(lambda r: len(r.log_records()) >= 6000, timeout=30, what="the 6,000 records")
        sent = time.monotonic()
        sc.send(js_encode(later))
        rx.received.wait_for(lambda r: any(rec.body.string_value.endswith("451 later") for _, rec in r.log_records()),
                             timeout=10, what="a record sent afterwards")
        assert time.monotonic() - sent < 5
        assert sc.terminate() == 0
        assert len(rx.received.log_records()) == 6001
        assert "items lost" not in sc.output()
        assert all(len(req.SerializeToString()) <= 1 << 20 for _, req in rx.received.requests["logs"])
    finally:
        if proxy:
            proxy.stop()
        rx.stop()


async def test_a_cancel_always_ends_the_export_lanes():
    """Python 3.11's wait_for can swallow a cancel that arrives as the awaited
    call finishes; the lanes wait with asyncio.timeout(), so a cancel at any
    moment, here while a collector refuses at once, ends them."""
    import random
    from otel_mta.export.senders import Result

    class RefusesAtOnce:
        name, endpoint, window = "test", "nowhere", 4

        async def send_async(self, signal, payload):
            return Result(False, True, error="UNAVAILABLE")

        async def aclose(self):
            pass

        def close(self):
            pass

    for i in range(300):
        exp = Exporter(RefusesAtOnce(), ExportQueue(1 << 20), initial_backoff_s=0.5, max_backoff_s=0.5)
        exp.start(asyncio.get_running_loop())
        exp.submit("logs", request("a", 1), 1)
        await asyncio.sleep(random.uniform(0, 0.003))   # refused: the lane waits out its backoff
        exp.submit("logs", request("b", 1), 1)          # wakes the lane's wait ...
        exp._task.cancel()                              # ... in the same moment as the cancel
        # asyncio.wait, not await: awaiting would pass the test's own timeout on as another cancel
        done, _ = await asyncio.wait({exp._task}, timeout=5)
        if not done:
            exp._stopping = True   # end it for good before failing
            pytest.fail(f"cancel {i + 1} was swallowed: the export lanes still run")
        assert exp._task.cancelled()
        # what the lane held is counted, not silently gone
        assert exp.stats.failed == {("logs", "shutdown"): 2}
