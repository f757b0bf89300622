"""GELF over TCP: uncompressed messages, each ended by a NUL byte (Graylog's
framing). Bounded: connections (further ones are closed at once), frame size
(an oversized frame is skipped up to its NUL, the connection keeps working),
idle time (silent connections are closed). While the export queue is
congested, no connection is read: TCP's flow control then holds the senders
back instead of the sidecar dropping their messages."""
from __future__ import annotations

import asyncio
import socket
import time

RESUME_CHECK_S = 0.1


class Connection(asyncio.Protocol):
    __slots__ = ("server", "transport", "peer", "buf", "skipping", "last")

    def __init__(self, server: "TcpListener"):
        self.server = server
        self.transport = None
        self.peer = None
        self.buf = bytearray()
        self.skipping = False
        self.last = time.monotonic()

    def connection_made(self, transport) -> None:
        s = self.server
        if len(s.connections) >= s.max_connections:
            s.refuse("too_many_connections")
            transport.abort()
            return
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        s.connections.add(self)
        if s.paused:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.last = time.monotonic()
        buf = self.buf
        buf += data
        handle, peer = self.server.handle, self.peer
        start = 0
        while True:
            end = buf.find(b"\0", start)
            if end < 0:
                break
            if self.skipping:
                self.skipping = False
            elif end > start:
                handle(bytes(buf[start:end]), peer)
            start = end + 1
        if start:
            del buf[:start]
        if len(buf) > self.server.max_size:
            if not self.skipping:
                self.server.refuse("too_large")
                self.skipping = True
            buf.clear()
        if not self.server.paused and self.server.congested():
            self.server.pause()

    def eof_received(self):
        # a last frame without its NUL: take it (it fails to parse if cut short)
        if self.buf and not self.skipping:
            self.server.handle(bytes(self.buf), self.peer)
        self.buf.clear()
        return False

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)


def bind_tcp(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class TcpListener:
    def __init__(self, host: str, port: int, handle, refuse, max_connections: int, max_size: int,
                 idle_timeout: float, congested=lambda: False):
        self.host, self.port = host, port
        self.handle = handle          # (data, peer) -> None
        self.refuse = refuse          # (reason) -> None
        self.congested = congested    # () -> bool: the export queue has no room left
        self.max_connections = max_connections
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.connections: set = set()
        self.server = None
        self.paused = False
        self._resume_timer = None

    async def start(self) -> None:
        sock = bind_tcp(self.host, self.port)
        try:
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self.server = await asyncio.get_running_loop().create_server(lambda: Connection(self), sock=sock)

    def pause(self) -> None:
        """Stop reading every connection until the export queue has room again."""
        self.paused = True
        for c in self.connections:
            c.transport.pause_reading()
        self._resume_timer = asyncio.get_running_loop().call_later(RESUME_CHECK_S, self._maybe_resume)

    def _maybe_resume(self) -> None:
        if self.server is None:
            return
        if self.congested():
            self._resume_timer = asyncio.get_running_loop().call_later(RESUME_CHECK_S, self._maybe_resume)
            return
        self.paused = False
        self._resume_timer = None
        now = time.monotonic()
        for c in self.connections:
            c.last = now          # waiting for us is not idling
            c.transport.resume_reading()

    def close_idle(self) -> int:
        if self.paused:
            return 0
        deadline = time.monotonic() - self.idle_timeout
        idle = [c for c in self.connections if c.last < deadline]
        for c in idle:
            self.connections.discard(c)
            c.transport.close()
        return len(idle)

    async def stop(self) -> None:
        if self.server is None:
            return
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        self.server.close()
        for c in list(self.connections):
            c.transport.close()
        await self.server.wait_closed()
        self.server = None
