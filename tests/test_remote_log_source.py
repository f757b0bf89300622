"""The remote-log socket: every waiting datagram is read, with its sender, by
the reading thread (sources/_udp.c Reader), by recvmmsg on the event loop, and
by the recvfrom_into fallback; what the thread's queue cannot hold is counted."""
from __future__ import annotations

import asyncio
import socket

import pytest

from otel_mta.config import RemoteLogSettings
from otel_mta.sources import remote_log, udp
from tests.otlp_receiver import REQUEST


@pytest.fixture(params=["thread", "recvmmsg", "recvfrom_into"])
def reader(request, monkeypatch):
    assert udp.Reader is not None and udp.recv_many is not None  # CI builds them
    if request.param != "thread":
        monkeypatch.setattr(udp, "Reader", None)
    if request.param == "recvfrom_into":
        monkeypatch.setattr(udp, "recv_many", None)
    return request.param


async def test_every_waiting_datagram_is_read_with_its_sender(capture, js_encode, reader, monkeypatch):
    make, _ = capture
    pipeline = make()
    source = remote_log.RemoteLogSource(pipeline, RemoteLogSettings(endpoint="127.0.0.1:0"))
    seen = []
    monkeypatch.setattr(source.udp, "handle", lambda data, peer=None: seen.append((data, peer)))
    monkeypatch.setattr(udp, "BURST", 50)  # several wake-ups, and reads of 32 and less
    await source.start()
    try:
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        entries = js_encode([{"id": f"q{i}", "action": "QUEUED"} for i in range(230)])
        sent = []
        for i in range(230):
            data = entries[i] if i % 50 else b"\x00" * (i % 7 + 60000)
            sender = senders[i // 100 % 2]
            sender.sendto(data, ("127.0.0.1", source.port))
            sent.append((data, ("127.0.0.1", sender.getsockname()[1])))
        for _ in range(200):
            if len(seen) == len(sent):
                break
            await asyncio.sleep(0.01)
        assert seen == sent  # all of them, in order, whole (60 kB ones too), each with its sender
        assert (source.udp.reader is not None) == (reader == "thread")
    finally:
        for s in senders:
            s.close()
        await source.stop()


async def test_what_the_queue_cannot_hold_is_counted_and_the_rest_is_read(capture, js_encode, monkeypatch):
    """The event loop is busy (here: sending) while the thread reads: a queue of
    256 KiB holds ~190 of these datagrams, the rest are counted as queue_full
    (or by the kernel), none silently; then the receiver goes on."""
    make, _ = capture
    source = remote_log.RemoteLogSource(make(), RemoteLogSettings(endpoint="127.0.0.1:0", queue_size="256KiB"))
    seen = []
    monkeypatch.setattr(source.udp, "handle", lambda data, peer=None: seen.append(data))
    await source.start()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(3000):  # the loop does not run meanwhile: only the thread reads
            sender.sendto(b"%05d" % i + b"." * 1000, ("127.0.0.1", source.port))
        last = -1
        for _ in range(300):  # until everything queued was taken
            await asyncio.sleep(0.02)
            if len(seen) == last and last > 0:
                break
            last = len(seen)
        drops = dict(source.udp.new_drops())
        assert 100 < len(seen) < 3000 and drops.get("queue_full", 0) > 0
        assert len(seen) + sum(drops.values()) == 3000
        assert [int(d[:5]) for d in seen] == sorted(int(d[:5]) for d in seen)  # in order
        sender.sendto(b"after", ("127.0.0.1", source.port))
        for _ in range(100):
            if seen[-1] == b"after":
                break
            await asyncio.sleep(0.01)
        assert seen[-1] == b"after"
    finally:
        sender.close()
        await source.stop()


async def test_stopping_reads_what_the_thread_queued_and_the_socket_holds(capture, monkeypatch):
    make, _ = capture
    source = remote_log.RemoteLogSource(make(), RemoteLogSettings(endpoint="127.0.0.1:0"))
    seen = []
    monkeypatch.setattr(source.udp, "handle", lambda data, peer=None: seen.append(data))
    await source.start()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(2000):
        sender.sendto(b"%d" % i, ("127.0.0.1", source.port))
    sender.close()
    await source.stop()  # at once: some are queued, some may still be in the kernel's buffer
    assert seen == [b"%d" % i for i in range(2000)]


def test_a_mapping_bug_is_refused_counted_and_logged_once_per_interval(capture, js_encode, monkeypatch, caplog):
    """A bug in the mapping must not take the listener down nor flood the log:
    each such entry is refused as internal_error, the traceback is logged at
    most once per interval, and the next good entry is mapped."""
    make, rx = capture
    pipeline = make()
    source = remote_log.RemoteLogSource(pipeline, RemoteLogSettings(endpoint="127.0.0.1:0"))
    real = source._handle_event

    def buggy(event):
        if event.action == "DELETED":
            raise KeyError("bug")
        real(event)

    monkeypatch.setattr(source, "_handle_event", buggy)
    bad = js_encode([{"id": f"q{i}", "seq": "001", "action": "DELETED"} for i in range(5)])
    good = js_encode([{"id": "q9", "action": "QUEUED"}])
    with caplog.at_level("ERROR", logger="otel_mta.remote_log"):
        for data in bad + good:
            source.handle_datagram(data)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "please report this" in tracebacks[0].getMessage()
    payload, _ = pipeline.metrics.collect()
    rx.add("metrics", REQUEST["metrics"].FromString(payload))
    refused = {pt[0]["reason"]: pt[1].as_int for pt in rx.last_points("otelmta_receiver_refused_records")}
    assert refused == {"internal_error": 5}
    assert rx.last_points("otelmta_receiver_accepted_records")[0][1].as_int == 1
