"""Collects encoded log records or spans into export requests.

Records arrive already encoded (signals/logs.py, signals/traces.py), grouped by
resource; a request goes to the exporter when `max_batch` records are waiting or
when the schedule delay (OTEL_BLRP_SCHEDULE_DELAY / OTEL_BSP_SCHEDULE_DELAY)
passes. Everything runs on the event loop, so no locks.
"""
from __future__ import annotations

from typing import Callable

from otel_mta import __version__
from otel_mta.signals import wire

SCOPE = wire.scope("otel-mta", __version__)


class Batcher:
    def __init__(self, signal: str, submit: Callable[[str, bytes, int], None], max_batch: int = 512):
        self.signal = signal
        self._submit = submit
        self.max_batch = max_batch
        self._groups: dict = {}
        self.pending = 0
        self._last = (None, None)  # (resource, its group): most records in a row share one

    def add(self, resource, record: bytes) -> None:
        last, group = self._last
        if resource is not last:
            group = self._groups.get(resource)
            if group is None:
                group = self._groups[resource] = []
            self._last = (resource, group)
        group.append(record)
        self.pending += 1
        if self.pending >= self.max_batch:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        groups, count = self._groups, self.pending
        self._groups, self.pending, self._last = {}, 0, (None, None)
        payload = wire.request([(res.encoded, SCOPE, records) for res, records in groups.items()])
        self._submit(self.signal, payload, count)
