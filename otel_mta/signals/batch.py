"""Collects encoded log records or spans into export requests.

Records arrive already encoded (signals/logs.py, signals/traces.py), grouped by
resource; a request goes to the exporter when `max_batch` records or
`MAX_REQUEST_BYTES` are waiting, or when the schedule delay
(OTEL_BLRP_SCHEDULE_DELAY / OTEL_BSP_SCHEDULE_DELAY) passes. Everything runs on
the event loop, so no locks.
"""
from __future__ import annotations

from typing import Callable

from otel_mta import __version__
from otel_mta.signals import wire

SCOPE = wire.scope("otel-mta", __version__)
# The Collector's OTLP receiver refuses gRPC messages over 4 MiB by default
# (max_recv_msg_size_mib), and a refused request would be retried forever: a
# batch of large log lines (GELF) goes out before it gets that big.
MAX_REQUEST_BYTES = 3 << 20


class Batcher:
    def __init__(self, signal: str, submit: Callable[[str, bytes, int], None], max_batch: int = 2048,
                 max_bytes: int = MAX_REQUEST_BYTES):
        self.signal = signal
        self._submit = submit
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self._groups: dict = {}
        self.pending = 0
        self._bytes = 0
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
        self._bytes += len(record)
        if self.pending >= self.max_batch or self._bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        groups, count = self._groups, self.pending
        self._groups, self.pending, self._bytes, self._last = {}, 0, 0, (None, None)
        payload = wire.request([(res.encoded, SCOPE, records) for res, records in groups.items()])
        self._submit(self.signal, payload, count)
