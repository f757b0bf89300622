"""GELF over TCP: uncompressed messages, each ended by a NUL byte (Graylog's
framing). Bounded: connections (further ones are closed at once), frame size
(an oversized frame is skipped up to its NUL, the connection keeps working),
idle time (silent connections are closed)."""
from __future__ import annotations

import asyncio
import socket
import time


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
                 idle_timeout: float):
        self.host, self.port = host, port
        self.handle = handle          # (data, peer) -> None
        self.refuse = refuse          # (reason) -> None
        self.max_connections = max_connections
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.connections: set = set()
        self.server = None

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

    def close_idle(self) -> int:
        deadline = time.monotonic() - self.idle_timeout
        idle = [c for c in self.connections if c.last < deadline]
        for c in idle:
            self.connections.discard(c)
            c.transport.close()
        return len(idle)

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for c in list(self.connections):
            c.transport.close()
        await self.server.wait_closed()
        self.server = None
