"""Collects encoded log records or spans into export requests.

Records arrive already encoded (signals/logs.py, signals/traces.py), grouped by
resource; a request goes to the exporter when `max_batch` records are waiting,
before the next record would make it larger than `max_bytes`
(exporter.max_request_size: receivers behind a body-size limit refuse larger
ones), or when the schedule delay (OTEL_BLRP_SCHEDULE_DELAY /
OTEL_BSP_SCHEDULE_DELAY) passes. Everything runs on the event loop, so no locks.
"""
from __future__ import annotations

from typing import Callable

from otel_mta import __version__
from otel_mta.signals import wire

SCOPE = wire.scope("otel-mta", __version__)
MAX_REQUEST_BYTES = 512 << 10   # the default of exporter.max_request_size
# bytes a request adds around its records: per record its tag and length (a
# length of up to 4 bytes: records < 256 MiB); per resource the resource, the
# scope and the tags and lengths of the four messages around them
_PER_RECORD = 5
_PER_GROUP = len(SCOPE) + 4 * 6


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
        size = len(record) + _PER_RECORD
        last, group = self._last
        if resource is not last:
            group = self._groups.get(resource)
        if group is None:
            size += len(resource.encoded) + _PER_GROUP
        if self._bytes + size > self.max_bytes and self.pending:
            # the request goes before this record would make it too large
            if group is not None:
                size += len(resource.encoded) + _PER_GROUP
            self.flush()
            group = None
        if group is None:
            group = self._groups[resource] = []
            self._last = (resource, group)
        elif resource is not last:
            self._last = (resource, group)
        group.append(record)
        self.pending += 1
        self._bytes += size
        if self.pending >= self.max_batch:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        groups, count = self._groups, self.pending
        self._groups, self.pending, self._bytes, self._last = {}, 0, 0, (None, None)
        payload = wire.request([(res.encoded, SCOPE, records) for res, records in groups.items()])
        self._submit(self.signal, payload, count)
