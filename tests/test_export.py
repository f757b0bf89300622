"""Export reliability: retries while the collector is down, bounded queues with
counted overflow, and the on-disk spool that survives an outage and a restart."""
from __future__ import annotations

import socket
import time

import grpc
import pytest

from otel_mta.export.exporter import Exporter
from otel_mta.export.queue import ExportQueue
from otel_mta.export.senders import GrpcSender, HttpSender
from otel_mta.export.spool import Spool
from otel_mta.signals import logs as L, wire
from tests.conftest import free_port
from tests.otlp_receiver import GrpcReceiver, HttpReceiver

RES = wire.resource({"service.name": "test"})
SCOPE = wire.scope("t", "1")


def request(n: int, records: int = 1, pad: int = 0) -> bytes:
    recs = [L.encode_log(1, 1, L.INFO, f"{n}:{i}" + "x" * pad, b"") for i in range(records)]
    return wire.request([(RES, SCOPE, recs)])


def bodies(rx) -> list[str]:
    return [r.body.string_value.split("x")[0] for _, r in rx.log_records()]


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_retries_until_the_collector_comes_back_in_order(kind):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    sender = GrpcSender(endpoint, {}, 2.0) if kind == "grpc" else HttpSender(endpoint, {}, 2.0)
    exp = Exporter(sender, ExportQueue(1 << 20), initial_backoff_s=0.05, max_backoff_s=0.2)
    exp.start()
    for n in range(5):
        exp.submit("logs", request(n), 1)
    deadline = time.monotonic() + 10   # a loaded machine: wait for the first retry, not a fixed time
    while exp.stats.retries == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert exp.healthy is False and exp.stats.retries > 0
    rx = GrpcReceiver(port) if kind == "grpc" else HttpReceiver(port)
    try:
        rx.received.wait_for(lambda r: len(r.log_records()) == 5, what="5 requests after recovery")
        assert bodies(rx.received) == ["0:0", "1:0", "2:0", "3:0", "4:0"]
        assert exp.stats.sent["logs"] == 5 and not exp.stats.failed
    finally:
        exp.stop(2)
        rx.stop()


@pytest.mark.parametrize("kind", ["grpc", "http"])
async def test_on_the_event_loop_the_worker_retries_in_order_too(kind):
    """How the sidecar runs it: a task on its event loop (gRPC via grpc.aio, HTTP in the executor)."""
    import asyncio
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    sender = GrpcSender(endpoint, {}, 2.0) if kind == "grpc" else HttpSender(endpoint, {}, 2.0)
    exp = Exporter(sender, ExportQueue(1 << 20), initial_backoff_s=0.05, max_backoff_s=0.2)
    exp.start(asyncio.get_running_loop())
    for n in range(5):
        exp.submit("logs", request(n), 1)
    deadline = time.monotonic() + 10
    while exp.stats.retries == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert exp.healthy is False and exp.stats.retries > 0
    rx = GrpcReceiver(port) if kind == "grpc" else HttpReceiver(port)
    try:
        await asyncio.to_thread(rx.received.wait_for, lambda r: len(r.log_records()) == 5,
                                what="5 requests after recovery")
        exp.submit("logs", request(5), 1)
        await asyncio.to_thread(rx.received.wait_for, lambda r: len(r.log_records()) == 6, what="one more")
        assert bodies(rx.received) == ["0:0", "1:0", "2:0", "3:0", "4:0", "5:0"]
        assert exp.stats.sent["logs"] == 6 and not exp.stats.failed and exp.healthy
    finally:
        await exp.stop_async(2)
        rx.stop()


async def test_a_steady_stream_of_requests_does_not_stretch_the_backoff():
    """The sidecar queues requests all the time (flushes, metrics): each must not restart the wait."""
    import asyncio
    port = free_port()
    exp = Exporter(GrpcSender(f"http://127.0.0.1:{port}", {}, 2.0), ExportQueue(1 << 20), 0.2, 0.4)
    exp.start(asyncio.get_running_loop())
    rx = None
    try:
        for n in range(60):  # 6 s of a request every 100 ms; the collector is back after 1 s
            exp.submit("logs", request(n), 1)
            await asyncio.sleep(0.1)
            if n == 10:
                rx = GrpcReceiver(port)
            if n > 10 and exp.stats.sent["logs"]:
                break
        assert exp.stats.sent["logs"], "nothing sent 5 s after the collector came back"
    finally:
        await exp.stop_async(2)
        if rx:
            rx.stop()


async def test_http_headers_and_gzip_reach_the_collector(http_receiver):
    seen = {}
    orig = http_receiver.httpd.RequestHandlerClass.do_POST

    def spy(handler):
        seen.update(handler.headers)
        return orig(handler)

    http_receiver.httpd.RequestHandlerClass.do_POST = spy
    sender = HttpSender(http_receiver.endpoint, {"api-key": "k1"}, 2.0, compression="gzip")
    try:
        assert (await sender.send_async("logs", request(1))).ok
    finally:
        await sender.aclose()
    assert seen["api-key"] == "k1" and seen["Content-Encoding"] == "gzip"
    assert seen["User-Agent"].startswith("otel-mta/")
    assert bodies(http_receiver.received) == ["1:0"]


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_a_permanent_error_drops_and_counts_and_the_pipeline_goes_on(kind):
    """OTLP: only some errors are retryable; the rest would fail forever and must not hold the queue."""
    rx = GrpcReceiver() if kind == "grpc" else HttpReceiver()
    rx.received.fail_with = grpc.StatusCode.INVALID_ARGUMENT if kind == "grpc" else 400
    rx.received.fail_calls = {"logs": 1}
    sender = GrpcSender(rx.endpoint, {}, 2.0) if kind == "grpc" else HttpSender(rx.endpoint, {}, 2.0)
    exp = Exporter(sender, ExportQueue(1 << 20), 0.05, 0.1)
    exp.start()
    try:
        exp.submit("logs", request(1, records=3), 3)
        rx.received.wait_for(lambda r: exp.stats.failed, what="the refusal")
        exp.submit("logs", request(2), 1)
        rx.received.wait_for(lambda r: len(r.log_records()) == 1, what="the request after the refused one")
        assert bodies(rx.received) == ["2:0"]
        assert exp.stats.failed == {("logs", "permanent_error"): 3}
        assert exp.stats.retries == 0 and rx.received.calls == 2 and exp.healthy
    finally:
        exp.stop(1)
        rx.stop()


def test_memory_queue_is_bounded_and_overflow_is_counted():
    exp = Exporter(GrpcSender(f"http://127.0.0.1:{free_port()}", {}, 0.5), ExportQueue(4000), 0.05, 0.1)
    exp.start()
    for n in range(30):
        exp.submit("logs", request(n, pad=400), 1)
    assert exp.queue.bytes <= 4000
    assert exp.stats.failed[("logs", "queue_full")] >= 20
    exp.stop(0.5)


def test_spool_keeps_everything_in_order_across_an_outage_and_a_restart(tmp_path):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    spool_dir = tmp_path / "spool"
    # run 1: collector down the whole time; a tiny memory queue so most goes to disk
    exp = Exporter(GrpcSender(endpoint, {}, 0.5), ExportQueue(3000, Spool(spool_dir, 10 << 20)), 0.05, 0.1)
    exp.start()
    for n in range(60):
        exp.submit("logs", request(n, records=2, pad=300), 2)
    time.sleep(0.3)
    exp.stop(0.5)
    assert not exp.stats.failed and exp.stats.sent["logs"] == 0
    assert len(list(spool_dir.rglob("*.spool"))) >= 1
    # run 2: a new process finds the spool and replays it once the collector is up
    rx = GrpcReceiver(port)
    try:
        exp2 = Exporter(GrpcSender(endpoint, {}, 2.0), ExportQueue(3000, Spool(spool_dir, 10 << 20)), 0.05, 0.1)
        exp2.start()
        exp2.submit("logs", request(60, records=2), 2)
        rx.received.wait_for(lambda r: len(r.log_records()) == 122, what="all 61 requests")
        exp2.stop(2)
        expected = [f"{n}:{i}" for n in range(61) for i in range(2)]
        assert bodies(rx.received) == expected
        assert not list(spool_dir.rglob("*.spool"))
    finally:
        rx.stop()


def test_spool_is_bounded_and_overflow_is_counted(tmp_path):
    exp = Exporter(GrpcSender(f"http://127.0.0.1:{free_port()}", {}, 0.5),
                   ExportQueue(1000, Spool(tmp_path, max_bytes=3000)), 0.05, 0.1)
    exp.start()
    import os
    for n in range(40):
        exp.submit("logs", wire.request([(RES, SCOPE, [L.encode_log(1, 1, L.INFO, os.urandom(300).hex(), b"")])]), 1)
    assert exp.queue.spool.size <= 3000
    assert exp.stats.failed[("logs", "queue_full")] > 0
    exp.stop(0.3)


def test_a_crash_mid_write_loses_only_the_torn_record(tmp_path):
    spool = Spool(tmp_path, 1 << 20)
    for n in range(5):
        spool.append("logs", request(n), 1)
    spool.close()
    seg = next((tmp_path / "logs").glob("*.spool"))
    seg.write_bytes(seg.read_bytes()[:-7])  # the last record torn by a crash
    again = Spool(tmp_path, 1 << 20)
    got = []
    while (item := again.pop("logs")) is not None:
        got.append(item[1])
    assert got == [request(n) for n in range(4)]
    assert again.corrupt == 1


def test_a_request_stops_at_the_record_limit_or_before_the_byte_cap():
    """Large log lines (GELF) must not make a request a receiver refuses for its
    size: the batch goes out before the next record would pass max_bytes."""
    from otel_mta.signals.batch import Batcher
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    class Res:
        encoded = wire.resource({"service.name": "zonemta", "host.name": "mx1"})

    cap = 512 << 10
    sent = []
    b = Batcher("logs", lambda signal, payload, n: sent.append((payload, n)), max_batch=2048, max_bytes=cap)
    big = L.encode_log(1, 1, L.INFO, "x" * 100_000, {})
    for _ in range(70):  # 7 MB of records, far below 2,048 of them
        b.add(Res, big)
    b.flush()
    assert [n for _, n in sent] == [5] * 14
    assert all(cap - len(big) < len(payload) <= cap for payload, _ in sent)
    req = ExportLogsServiceRequest.FromString(sent[0][0])
    assert len(req.resource_logs[0].scope_logs[0].log_records) == 5

    # exactly at the cap, with records of several resources in one request
    sent.clear()
    other = type("Other", (), {"encoded": wire.resource({"service.name": "wildduck"})})
    for i in range(3000):
        b.add(Res if i % 3 else other, L.encode_log(1, 1, L.INFO, "y" * (i % 700), {}))
    b.flush()
    assert sum(n for _, n in sent) == 3000
    assert all(len(payload) <= cap for payload, _ in sent)
    assert max(len(payload) for payload, _ in sent) > cap * 0.98   # full, not half empty

    sent.clear()
    small = L.encode_log(1, 1, L.INFO, "short", {})
    for _ in range(4100):
        b.add(Res, small)
    assert [n for _, n in sent] == [2048, 2048]
    assert b.pending == 4

    # one record over the cap goes alone: the exporter drops it if the receiver refuses it
    b.flush()
    sent.clear()
    b.add(Res, small)
    b.add(Res, L.encode_log(1, 1, L.INFO, "z" * (cap + 10), {}))
    b.add(Res, small)
    b.flush()
    assert [n for _, n in sent] == [1, 1, 1]
