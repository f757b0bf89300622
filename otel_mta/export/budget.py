"""Bytes shared by the export lanes: the memory queue's, the spool's disk."""
from __future__ import annotations

import threading

SIGNALS = ("logs", "traces", "metrics")


class Budget:
    """Bytes shared by the lanes (the memory queue's, or the spool's disk).

    Each lane may always use `max_bytes / 8`; beyond that only what the other
    lanes' unused shares leave. So a lane whose backend is down fills at most
    3/4 of the budget, and the others keep room to go on.
    """

    def __init__(self, max_bytes: int, lanes=SIGNALS):
        self.max_bytes = max_bytes
        self.share = max_bytes // 8
        self.used = dict.fromkeys(lanes, 0)
        self.total = 0
        self._lock = threading.Lock()

    def take(self, lane: str, n: int) -> bool:
        with self._lock:
            if self.total + n > self.max_bytes:
                return False
            if self.used[lane] + n > self.share:
                kept = sum(self.share - u for k, u in self.used.items() if k != lane and u < self.share)
                if self.total + n > self.max_bytes - kept:
                    return False
            self.used[lane] += n
            self.total += n
            return True

    def force(self, lane: str, n: int) -> None:
        """Account for bytes that are already there (spool segments found at start)."""
        with self._lock:
            self.used[lane] += n
            self.total += n

    def give(self, lane: str, n: int) -> None:
        with self._lock:
            self.used[lane] -= n
            self.total -= n

    def nearly_full(self, lane: str, fill: float) -> bool:
        """Less than (1 - fill) of what this lane may hold is left."""
        with self._lock:
            kept = sum(self.share - u for k, u in self.used.items() if k != lane and u < self.share)
            return self.total >= fill * (self.max_bytes - kept)
