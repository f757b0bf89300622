"""ZoneMTA's remote log: one UDP datagram per `remotelog(id, seq, action, data)`,
msgpack-js encoded (sources/msgpack_js.py), sent by @zone-eu/wild-plugins when
ZoneMTA's `log.remote` is set (docs/remote-log.md).

The socket is read with `add_reader` and non-blocking reads until it runs dry:
asyncio's DatagramProtocol maps a 256 KiB buffer per datagram and loses most of
a burst (../PERF-FACTS). The reads use recvmmsg(2), 32 datagrams per system
call (sources/_udp.c), or recvfrom_into where that is not built. UDP cannot
push back, so the kernel's drop counter for this socket (/proc/net/udp) is
exported too.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from otel_mta.model import MailEvent
from otel_mta.pipeline import RateLimitedLog
from otel_mta.sources.base import CheckResult, Source
from otel_mta.sources.msgpack_js import DecodeError, decode

try:  # recvmmsg, which Python's socket module lacks (sources/_udp.c)
    from otel_mta.sources._udp import recv_many
except ImportError:  # pragma: no cover - exercised where no compiler exists
    recv_many = None

log = logging.getLogger("otel_mta.remote_log")
MAX_DATAGRAM = 65535
BURST = 64  # datagrams per wake-up: timers, other sources and export answers run in between


def bind_udp(host: str, port: int, rcvbuf: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped for this socket (its receive buffer was full)."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if len(cols) > 12 and cols[9] == inode:
                        return int(cols[12])
        except OSError:
            continue
    return None


class RemoteLogSource(Source):
    name = "remote_log"
    transport = "udp"

    def __init__(self, pipeline, settings):
        super().__init__(pipeline)
        self.settings = settings
        self.host, self.port = settings.endpoint
        self.sock: socket.socket | None = None
        self._buf = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buf)
        self._drops_seen = 0
        self._say = RateLimitedLog(log)
        self.received = 0
        self._accepted = 0  # added to the metric once per burst, not per entry (an add costs ~0.4 us)
        mail = pipeline.mail
        self._handle_event = mail.handle
        pipeline.metrics.before_collect(self._count_kernel_drops)
        pipeline.metrics.before_collect(self._count_accepted)

    @property
    def endpoint(self) -> str:
        return f"udp://{self.host}:{self.port}"

    async def start(self) -> None:
        self.sock = bind_udp(self.host, self.port, self.settings.receive_buffer)
        self.port = self.sock.getsockname()[1]
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._on_readable)
        self.ready = True

    def _on_readable(self) -> None:
        handle = self.handle_datagram
        for data, peer in self._read(BURST):
            handle(data, peer)
        self._count_accepted()

    def _read(self, limit: int) -> list:
        """Up to `limit` waiting datagrams as (data, (host, port))."""
        out = []
        try:
            if recv_many is not None:
                out = recv_many(self.sock.fileno(), limit)
            else:
                recv, buf, view = self.sock.recvfrom_into, self._buf, self._view
                while len(out) < limit:
                    n, peer = recv(buf)
                    out.append((bytes(view[:n]), peer))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as err:  # e.g. ICMP errors surfacing on the socket
            self._say(logging.DEBUG, "recv", "remote log socket error: %s", err)
        return out

    def handle_datagram(self, data: bytes, peer=None) -> None:
        self.received += 1
        p = self.pipeline
        try:
            entry = decode(data)
        except DecodeError as err:
            p.refused(self.name, self.transport, err.reason)
            self._say(logging.DEBUG, err.reason, "refused a %d-byte remote-log datagram from %s: %s",
                      len(data), peer[0] if peer else "?", err)
            return
        if type(entry) is not dict:
            p.refused(self.name, self.transport, "not_an_entry")
            return
        action = entry.get("action")
        qid = entry.get("id")
        if type(action) is not str or not action or qid is None:
            p.refused(self.name, self.transport, "not_an_entry")
            self._say(logging.DEBUG, "not_an_entry", "refused a remote-log entry without id/action from %s",
                      peer[0] if peer else "?")
            return
        seq = entry.get("seq")
        event = MailEvent(action, str(qid), str(seq) if seq else None, entry, time.time_ns(), self.name)
        try:
            self._handle_event(event)
        except Exception:  # a mapping bug must not take the listener down
            p.refused(self.name, self.transport, "internal_error")
            log.exception("could not map a %s entry (please report this)", action)
            return
        self._accepted += 1

    def _count_accepted(self) -> None:
        if self._accepted:
            self.pipeline.accepted(self.name, self.transport, self._accepted)
            self._accepted = 0

    def _count_kernel_drops(self) -> None:
        if self.sock is None:
            return
        drops = kernel_drops(self.sock)
        if drops is not None and drops > self._drops_seen:
            self.pipeline.dropped(self.name, self.transport, "kernel_overflow", drops - self._drops_seen)
            self._drops_seen = drops

    async def stop(self) -> None:
        if self.sock is None:
            return
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        # what the kernel already holds was sent to us: read it before closing
        # (a full receive buffer is some thousands of datagrams; the bound only
        # guards against a sender that keeps it full)
        for _ in range(65536 // BURST):
            before = self.received
            self._on_readable()
            if self.received == before:
                break
        self._count_kernel_drops()
        self.sock.close()
        self.sock = None
        self.ready = False

    async def check(self) -> CheckResult:
        if self.sock is not None:
            return CheckResult(self.name, self.endpoint, True, "listening")
        try:
            sock = bind_udp(self.host, self.port, 0)
        except OSError as err:
            return CheckResult(self.name, self.endpoint, False, f"cannot bind: {err.strerror}")
        sock.close()
        return CheckResult(self.name, self.endpoint, True, "port is free; ZoneMTA: log.remote = {protocol: 'udp4', host, port: %d}" % self.port)
