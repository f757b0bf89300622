"""Reading a UDP socket fast, for the remote-log and GELF receivers.

The socket is read with `add_reader` and non-blocking reads until it runs dry
or a burst is done: asyncio's DatagramProtocol maps a 256 KiB buffer per
datagram and loses most of a burst (../PERF-FACTS). The reads use recvmmsg(2),
32 datagrams per system call (sources/_udp.c), or recvfrom_into where that is
not built. UDP cannot push back, so the kernel's drop counter for the socket
(/proc/net/udp) is read for self-telemetry.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket

try:  # recvmmsg, which Python's socket module lacks (sources/_udp.c)
    from otel_mta.sources._udp import recv_many
except ImportError:  # pragma: no cover - exercised where no compiler exists
    recv_many = None

MAX_DATAGRAM = 65535
BURST = 64  # datagrams per wake-up: timers, other sources and export answers run in between
COALESCE_S = 0.005  # after draining the socket, let datagrams gather this long before reading again


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


class UdpListener:
    """A bound socket whose datagrams go to `handle(data, peer)` on the loop.

    `after_burst()` runs after each wake-up's datagrams (receivers tally there
    what they counted per datagram); `say` is a RateLimitedLog.
    """

    def __init__(self, host: str, port: int, rcvbuf: int, handle, say, what: str, after_burst=None):
        self.host, self.port, self.rcvbuf = host, port, rcvbuf
        self.handle = handle
        self.say = say
        self.what = what
        self.after_burst = after_burst
        self.sock: socket.socket | None = None
        self._buf = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buf)
        self.received = 0
        self._drops_seen = 0
        self._paused: asyncio.TimerHandle | None = None
        self._draining = False

    def start(self) -> None:
        self.sock = bind_udp(self.host, self.port, self.rcvbuf)
        self._draining = False
        self.port = self.sock.getsockname()[1]
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self.on_readable)

    def on_readable(self) -> None:
        handle = self.handle
        batch = self.read(BURST)
        self.received += len(batch)
        for data, peer in batch:
            handle(data, peer)
        if self.after_burst is not None:
            self.after_burst()
        if len(batch) < BURST and COALESCE_S and not self._draining:
            # Drained. Senders write in small bursts; waking for each one cost
            # twice the CPU per datagram of reading a few ms' worth at once
            # (bench/remote_log.py at 20,000/s: 40 us vs 20 us an entry), so
            # stop watching the socket for a moment. The kernel buffers meanwhile.
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.sock.fileno())
            self._paused = loop.call_later(COALESCE_S, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self.sock is not None:
            asyncio.get_running_loop().add_reader(self.sock.fileno(), self.on_readable)

    def read(self, limit: int) -> list:
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
            self.say(logging.DEBUG, "recv", "%s socket error: %s", self.what, err)
        return out

    def new_kernel_drops(self) -> int:
        """Kernel drops since the last call."""
        if self.sock is None:
            return 0
        drops = kernel_drops(self.sock)
        if drops is None or drops <= self._drops_seen:
            return 0
        new, self._drops_seen = drops - self._drops_seen, drops
        return new

    def stop(self) -> None:
        """Stop listening; what the kernel already holds was sent to us, so it
        is read first (a full receive buffer is some thousands of datagrams; the
        bound only guards against a sender that keeps it full)."""
        if self.sock is None:
            return
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        self._draining = True  # read to the end, no pauses
        for _ in range(65536 // BURST):
            before = self.received
            self.on_readable()
            if self.received == before:
                break
        self.sock.close()
        self.sock = None
