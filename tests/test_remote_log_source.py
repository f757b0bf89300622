"""The remote-log socket: every waiting datagram is read, with its sender, both
by recvmmsg (sources/_udp.c) and by the recvfrom_into fallback."""
from __future__ import annotations

import asyncio
import socket

import pytest

from otel_mta.config import RemoteLogSettings
from otel_mta.sources import remote_log, udp
from tests.otlp_receiver import REQUEST


@pytest.fixture(params=["recvmmsg", "recvfrom_into"])
def reader(request, monkeypatch):
    if request.param == "recvmmsg":
        assert udp.recv_many is not None  # CI builds it
    else:
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
    finally:
        for s in senders:
            s.close()
        await source.stop()


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
