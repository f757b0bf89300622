"""Items that wait, briefly and in bounded number, for something that tells
their trace: ZoneMTA's SPAMCHECK / VIRUSCHECK entries until the message's
QUEUED (signals/mail.py), Haraka's log lines until their transaction ends
(signals/inbound.py).

Each key's items wait at most `hold_s` from the first one; at most
`capacity` items wait in all (hold() says False beyond: the caller goes on
without waiting). Keys are kept in the order they were first held, so expiry
looks only at the front.
"""
from __future__ import annotations

import time
from collections import OrderedDict


class Holding:
    __slots__ = ("hold_ns", "capacity", "_waiting", "held")

    def __init__(self, hold_s: float, capacity: int = 10_000):
        self.hold_ns = int(hold_s * 1e9)
        self.capacity = capacity
        self._waiting: OrderedDict = OrderedDict()   # key -> (deadline_ns, [items])
        self.held = 0

    def __len__(self) -> int:
        return self.held

    def __bool__(self) -> bool:
        return self.held > 0

    def __contains__(self, key) -> bool:
        return key in self._waiting

    def hold(self, key, item, now_ns: int | None = None) -> bool:
        """Keep `item` until `key` is resolved or its wait is over; False when
        holding is off or full (then the caller handles the item at once)."""
        if not self.hold_ns or self.held >= self.capacity:
            return False
        waiting = self._waiting.get(key)
        if waiting is None:
            deadline = (now_ns or time.time_ns()) + self.hold_ns
            self._waiting[key] = (deadline, [item])
        else:
            waiting[1].append(item)
        self.held += 1
        return True

    def resolve(self, key) -> list:
        """The items held for `key`, in the order they came (they wait no more)."""
        waiting = self._waiting.pop(key, None)
        if waiting is None:
            return []
        self.held -= len(waiting[1])
        return waiting[1]

    def expire(self, now_ns: int | None = None, flush_all: bool = False) -> list:
        """The items whose wait is over (all of them with flush_all), oldest first."""
        now_ns = now_ns or time.time_ns()
        out: list = []
        waiting = self._waiting
        while waiting:
            key, (deadline, items) = next(iter(waiting.items()))
            if deadline > now_ns and not flush_all:
                break
            del waiting[key]
            self.held -= len(items)
            out.extend(items)
        return out
