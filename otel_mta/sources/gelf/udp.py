"""GELF over UDP: one datagram is a whole message (plain, zlib or gzip) or one
chunk of a message (chunks.py).

Read with `add_reader` and non-blocking `recvfrom_into` until the socket runs
dry, as the remote-log source does: asyncio's DatagramProtocol maps a 256 KiB
buffer per datagram and loses most of a burst (PERF-FACTS).
"""
from __future__ import annotations

import asyncio
import logging

from otel_mta.sources.remote_log import bind_udp, kernel_drops

log = logging.getLogger("otel_mta.gelf")
MAX_DATAGRAM = 65535
BURST = 1024  # datagrams per wake-up, so timers and other sources still run


class UdpListener:
    def __init__(self, host: str, port: int, rcvbuf: int, handle, say):
        self.host, self.port = host, port
        self.rcvbuf = rcvbuf
        self.handle = handle          # (data, peer) -> None
        self.say = say
        self.sock = None
        self._buf = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buf)
        self.received = 0
        self.drops_seen = 0

    def start(self) -> None:
        self.sock = bind_udp(self.host, self.port, self.rcvbuf)
        self.port = self.sock.getsockname()[1]
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self.read)

    def read(self) -> None:
        recv, buf, view, handle = self.sock.recvfrom_into, self._buf, self._view, self.handle
        n = 0
        try:
            for n in range(BURST):
                try:
                    size, peer = recv(buf)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as err:  # e.g. ICMP errors surfacing on the socket
                    self.say(logging.DEBUG, "recv", "GELF UDP socket error: %s", err)
                    return
                handle(bytes(view[:size]), peer)
        finally:
            self.received += n

    def new_kernel_drops(self) -> int:
        if self.sock is None:
            return 0
        drops = kernel_drops(self.sock)
        if drops is None or drops <= self.drops_seen:
            return 0
        new, self.drops_seen = drops - self.drops_seen, drops
        return new

    def stop(self) -> None:
        if self.sock is None:
            return
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        for _ in range(64):  # what the kernel already holds was sent to us
            before = self.received
            self.read()
            if self.received == before:
                break
        self.sock.close()
        self.sock = None
