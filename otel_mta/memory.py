"""The C allocator's settings, by how busy the exporter is.

glibc serves a malloc over its mmap threshold (128 KiB) with a fresh mmap, and
gives freed memory at the top of the heap back to the kernel. Each export
request (up to 3 MiB, signals/batch.py) and gRPC's copy of it are therefore
faulted in page by page and handed back: at 50,000 remote-log entries/s that
was ~17,000 page faults a second, 5-10 % of the sidecar's CPU in the kernel
(bench/remote_log.py). Keeping those buffers in the heap costs 5-8 MiB of
RSS, which a sidecar that sends a few requests a second should not pay.

So the buffers are kept only while the exporter is busy: above HIGH records
a second the thresholds rise (requests come from the heap and stay); below
LOW they go back to glibc's and malloc_trim() returns what was kept.
"""
from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("otel_mta.memory")

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
DEFAULT = 128 << 10        # glibc's initial thresholds
KEEP_MMAP = 4 << 20        # above the largest export request
KEEP_TRIM = 16 << 20
HIGH = 20_000              # records a second: ~10 full requests
LOW = 5_000


class RequestBuffers:
    """Call `update(records_per_second)` every second or so."""

    def __init__(self, libc=None):
        self.keeping = False
        try:
            libc = libc or ctypes.CDLL(None)
            self._mallopt, self._trim = libc.mallopt, libc.malloc_trim
        except (OSError, AttributeError):  # not glibc (musl): nothing to tune
            self._mallopt = self._trim = None

    @property
    def available(self) -> bool:
        return self._mallopt is not None

    def update(self, records_per_second: float) -> None:
        if self._mallopt is None:
            return
        if not self.keeping and records_per_second > HIGH:
            self._set(KEEP_MMAP, KEEP_TRIM)
            self.keeping = True
            log.debug("exporting %.0f records/s: keeping request buffers", records_per_second)
        elif self.keeping and records_per_second < LOW:
            self._set(DEFAULT, DEFAULT)
            self._trim(0)
            self.keeping = False
            log.debug("exporting %.0f records/s: request buffers go back to the system", records_per_second)

    def _set(self, mmap: int, trim: int) -> None:
        self._mallopt(M_MMAP_THRESHOLD, mmap)
        self._mallopt(M_TRIM_THRESHOLD, trim)
