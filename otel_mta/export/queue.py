"""The bounded queue between the pipeline (event loop) and the export lanes.

One FIFO per signal (a lane), so a backend that refuses traces cannot hold
back logs or metrics; the lanes share one memory budget (`max_bytes`). Beyond
it, a lane's requests go to the on-disk spool when one is configured (and keep
going there until that lane's part of the spool is empty, so its order holds),
or are refused and counted.
"""
from __future__ import annotations

import collections

from otel_mta.export.budget import Budget
from otel_mta.export.spool import SIGNALS, Spool


class ExportQueue:
    def __init__(self, max_bytes: int, spool: Spool | None = None):
        self.max_bytes = max_bytes
        self.spool = spool
        self.memory = Budget(max_bytes)
        self._lanes = {s: collections.deque() for s in SIGNALS}

    @property
    def bytes(self) -> int:
        """Bytes waiting in memory, all lanes."""
        return self.memory.total

    def put(self, signal: str, payload: bytes, count: int) -> bool:
        """Queue a request; False when there is no room anywhere (counted by the caller)."""
        spooling = self.spool is not None and self.spool.waiting(signal) > 0
        if not spooling and self.memory.take(signal, len(payload)):
            self._lanes[signal].append((signal, payload, count))
            return True
        return self.spool is not None and self.spool.append(signal, payload, count)

    def get(self, signal: str):
        """The oldest request of that lane, or None. Reads the spool (disk) when
        that lane's memory part is empty: not to be called on the event loop then."""
        lane = self._lanes[signal]
        if lane:
            item = lane.popleft()
            self.memory.give(signal, len(item[1]))
            return item
        if self.spool is not None:
            return self.spool.pop(signal)
        return None

    def in_memory(self, signal: str) -> int:
        return len(self._lanes[signal])

    def spooled(self, signal: str) -> int:
        return self.spool.waiting(signal) if self.spool is not None else 0

    def congested(self, fill: float = 0.9) -> bool:
        """Nearly no room left for logs or spans, what receivers produce: those that can push back should."""
        budget = self.spool.budget if self.spool is not None else self.memory
        return any(budget.nearly_full(s, fill) for s in ("logs", "traces"))

    def __len__(self) -> int:
        return sum(map(len, self._lanes.values())) + (len(self.spool) if self.spool else 0)
