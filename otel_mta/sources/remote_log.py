"""ZoneMTA's remote log: one UDP datagram per `remotelog(id, seq, action, data)`,
msgpack-js encoded (sources/msgpack_js.py), sent by @zone-eu/wild-plugins when
ZoneMTA's `log.remote` is set (docs/remote-log.md). The socket is read by
sources/udp.py (recvmmsg bursts; kernel drops counted).
"""
from __future__ import annotations

import logging
import time

from otel_mta.model import MailEvent
from otel_mta.pipeline import RateLimitedLog
from otel_mta.sources.base import CheckResult, Source, cannot_bind
from otel_mta.sources.msgpack_js import DecodeError, decode
from otel_mta.sources.udp import UdpListener, bind_udp

log = logging.getLogger("otel_mta.remote_log")


class RemoteLogSource(Source):
    name = "remote_log"
    transport = "udp"

    def __init__(self, pipeline, settings):
        super().__init__(pipeline)
        self.settings = settings
        self.host, self.port = settings.endpoint
        self._say = RateLimitedLog(log)
        self.udp = UdpListener(self.host, self.port, settings.receive_buffer, self.handle_datagram, self._say,
                               "remote log", after_burst=self._count_accepted, queue_size=settings.queue_size)
        self._accepted = 0  # added to the metric once per burst, not per entry (an add costs ~0.4 us)
        self._handle_event = pipeline.mail.handle
        pipeline.metrics.before_collect(self._count_drops)
        pipeline.metrics.before_collect(self._count_accepted)

    @property
    def endpoint(self) -> str:
        return f"udp://{self.host}:{self.port}"

    @property
    def received(self) -> int:
        return self.udp.received

    async def start(self) -> None:
        self.udp.start()
        self.port = self.udp.port
        self.ready = True

    def handle_datagram(self, data: bytes, peer=None) -> None:
        try:
            entry = decode(data)
        except DecodeError as err:
            self.pipeline.refused(self.name, self.transport, err.reason)
            self._say(logging.DEBUG, err.reason, "refused a %d-byte remote-log datagram from %s: %s",
                      len(data), peer[0] if peer else "?", err)
            return
        except Exception:  # a decoder bug (or MemoryError) must not cost the rest of the burst
            self.pipeline.refused(self.name, self.transport, "internal_error")
            self._say(logging.ERROR, "internal_error", "could not decode a %d-byte remote-log datagram "
                      "(please report this)", len(data), exc_info=True)
            return
        action = qid = None
        if type(entry) is dict:
            action, qid = entry.get("action"), entry.get("id")
        if type(action) is not str or not action or qid is None:
            self.pipeline.refused(self.name, self.transport, "not_an_entry")
            self._say(logging.DEBUG, "not_an_entry", "refused a remote-log datagram that is not an entry "
                      "with id and action from %s", peer[0] if peer else "?")
            return
        seq = entry.get("seq")
        event = MailEvent(action, str(qid), str(seq) if seq else None, entry, time.time_ns(), self.name)
        try:
            self._handle_event(event)
        except Exception:  # a mapping bug must not take the listener down
            self.pipeline.refused(self.name, self.transport, "internal_error")
            self._say(logging.ERROR, "internal_error", "could not map a %s entry (please report this)", action,
                      exc_info=True)
            return
        self._accepted += 1

    def _count_accepted(self) -> None:
        if self._accepted:
            self.pipeline.accepted(self.name, self.transport, self._accepted)
            self._accepted = 0

    def flush_counts(self) -> None:
        self._count_drops()
        self._count_accepted()

    def _count_drops(self) -> None:
        for reason, n in self.udp.new_drops():
            self.pipeline.dropped(self.name, self.transport, reason, n)

    async def stop(self) -> None:
        if self.udp.sock is None:
            return
        self.udp.stop()
        self._count_drops()
        self._count_accepted()
        self.ready = False

    async def check(self) -> CheckResult:
        if self.udp.sock is not None:
            return CheckResult(self.name, self.endpoint, True, "listening")
        try:
            sock = bind_udp(self.host, self.port, 0)
        except OSError as err:
            return cannot_bind(self.name, self.endpoint, err)
        sock.close()
        return CheckResult(self.name, self.endpoint, True, "port is free; ZoneMTA: log.remote = {protocol: 'udp4', host, port: %d}" % self.port)
