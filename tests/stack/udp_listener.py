"""A raw UDP socket on a free loopback port that keeps what it receives.

Stands where the sidecar's remote-log (or GELF) listener would, so a test can
see exactly the datagrams ZoneMTA sends.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable

from .proc import LOOPBACK

MAX_KEPT = 100_000  # bounded: a runaway sender cannot eat the test's memory


class UdpListener:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()
        self.datagrams: list[bytes] = []
        self.dropped = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"udp-{self.port}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _run(self) -> None:
        while not self._stopped:
            try:
                data, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._cond:
                if len(self.datagrams) < MAX_KEPT:
                    self.datagrams.append(data)
                else:
                    self.dropped += 1
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[bytes]], bool], timeout: float = 30,
                 what: str = "expected datagrams") -> list[bytes]:
        """Wait until predicate(all datagrams so far) is true; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.datagrams):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"UDP :{self.port}: no {what} within {timeout}s; "
                        f"got {len(self.datagrams)} datagrams: {self.datagrams[-5:]!r}")
                self._cond.wait(left)
            return list(self.datagrams)

    def stop(self) -> None:
        self._stopped = True
        self._thread.join(2)
        self.sock.close()
