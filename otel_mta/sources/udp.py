"""Reading a UDP socket fast, for the remote-log and GELF receivers.

UDP cannot push back: whatever the kernel's receive buffer (capped by
net.core.rmem_max, often 4 MiB: ~130 ms of remote-log entries at 50,000/s)
cannot hold while the interpreter is busy is lost. So a thread in C
(sources/_udp.c, Reader) reads the socket with recvmmsg(2), 32 datagrams per
system call and without the GIL, into a queue bounded by `queue_size`
(default 16 MiB, ~0.8 s at that rate; memory is taken as the queue grows and
given back after), and wakes the event loop through an eventfd. The loop
takes the datagrams in bursts. What does not fit is counted, never waited
for: the kernel's drop counter for the socket (/proc/net/udp) and the
queue's overflow are both self-telemetry. Where the C module is not built,
the loop reads the socket itself (recvfrom_into); asyncio's DatagramProtocol
maps a 256 KiB buffer per datagram and loses most of a burst (../PERF-FACTS).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket

try:  # recvmmsg, which Python's socket module lacks, and the reading thread (sources/_udp.c)
    from otel_mta.sources._udp import Reader, recv_many
except ImportError:  # pragma: no cover - exercised where no compiler exists
    Reader = recv_many = None

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
    what they counted per datagram); `say` is a RateLimitedLog. `queue_size`
    bounds the reading thread's queue in bytes (0: no thread, the loop reads
    the socket).
    """

    def __init__(self, host: str, port: int, rcvbuf: int, handle, say, what: str, after_burst=None,
                 queue_size: int = 16 << 20):
        self.host, self.port, self.rcvbuf = host, port, rcvbuf
        self.queue_size = queue_size
        self.reader = None      # the reading thread's queue, when there is one
        self._fd = -1           # what the loop watches: the queue's eventfd, or the socket
        self._overflow_seen = 0
        self._unreported: list = []  # drops counted as the socket closed
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
        self.reader = Reader(self.sock.fileno(), self.queue_size) if Reader is not None and self.queue_size else None
        self._overflow_seen = 0
        self._fd = self.reader.fileno() if self.reader is not None else self.sock.fileno()
        asyncio.get_running_loop().add_reader(self._fd, self.on_readable)

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
            loop.remove_reader(self._fd)
            self._paused = loop.call_later(COALESCE_S, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self.sock is not None:
            asyncio.get_running_loop().add_reader(self._fd, self.on_readable)

    def read(self, limit: int) -> list:
        """Up to `limit` waiting datagrams as (data, (host, port))."""
        if self._fd != self.sock.fileno():
            return self.reader.take(limit)
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

    def new_drops(self) -> list[tuple[str, int]]:
        """Datagrams lost since the last call, by reason: `kernel_overflow`
        (the socket's buffer was full) and `queue_full` (the reading thread's
        queue was)."""
        out, self._unreported = self._unreported, []
        if self.reader is not None:
            _, overflow, _, error = self.reader.stats()
            if overflow > self._overflow_seen:
                out.append(("queue_full", overflow - self._overflow_seen))
                self._overflow_seen = overflow
            if error:
                self.say(logging.DEBUG, "recv", "%s socket error: %s", self.what, os.strerror(error))
        if self.sock is not None:
            drops = kernel_drops(self.sock)
            if drops is not None and drops > self._drops_seen:
                out.append(("kernel_overflow", drops - self._drops_seen))
                self._drops_seen = drops
        return out

    def stop(self) -> None:
        """Stop listening; what the thread queued and what the kernel already
        holds were sent to us, so they are read first (a full receive buffer is
        some thousands of datagrams; the bound only guards against a sender
        that keeps it full). Drops counted until then stay for new_drops()."""
        if self.sock is None:
            return
        asyncio.get_running_loop().remove_reader(self._fd)
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        self._draining = True  # read to the end, no pauses
        if self.reader is not None:
            self.reader.stop()
            self._drain(None)              # what the thread queued: finite, now that it has stopped
            self._fd = self.sock.fileno()  # then what came after it stopped
        self._drain(65536 // BURST)
        self._unreported = self.new_drops()
        self.sock.close()
        self.sock = None

    def _drain(self, max_bursts: int | None) -> None:
        n = 0
        while max_bursts is None or n < max_bursts:
            before = self.received
            self.on_readable()
            n += 1
            if self.received == before:
                break
