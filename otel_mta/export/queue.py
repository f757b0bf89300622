"""The bounded queue between the pipeline (event loop) and the export worker.

In memory up to `max_bytes`; beyond that, requests go to the on-disk spool when
one is configured (and keep going there until it is empty, so order holds), or
are refused and counted.
"""
from __future__ import annotations

import collections
import threading

from otel_mta.export.spool import Spool


class ExportQueue:
    def __init__(self, max_bytes: int, spool: Spool | None = None):
        self.max_bytes = max_bytes
        self.spool = spool
        self._items: collections.deque = collections.deque()
        self.bytes = 0
        self._cond = threading.Condition()

    def put(self, signal: str, payload: bytes, count: int) -> bool:
        """Queue a request; False when there is no room anywhere (counted by the caller)."""
        with self._cond:
            spooling = self.spool is not None and len(self.spool) > 0
            if not spooling and self.bytes + len(payload) <= self.max_bytes:
                self._items.append((signal, payload, count))
                self.bytes += len(payload)
                self._cond.notify()
                return True
        if self.spool is not None and self.spool.append(signal, payload, count):
            with self._cond:
                self._cond.notify()
            return True
        return False

    def get(self, timeout: float | None = None):
        """The oldest request, waiting up to `timeout`; None if there is none."""
        with self._cond:
            if not self._items and not (self.spool and len(self.spool)):
                self._cond.wait(timeout)
            if self._items:
                item = self._items.popleft()
                self.bytes -= len(item[1])
                return item
        if self.spool is not None:
            return self.spool.pop()
        return None

    def congested(self, fill: float = 0.9) -> bool:
        """Nearly no room left anywhere: receivers that can push back should."""
        if self.spool is not None:
            return self.spool.size >= fill * self.spool.max_bytes
        return self.bytes >= fill * self.max_bytes

    def __len__(self) -> int:
        return len(self._items) + (len(self.spool) if self.spool else 0)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
