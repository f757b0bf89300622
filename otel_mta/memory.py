"""The C allocator's settings for a process that builds megabyte-sized export
requests many times a second.

glibc serves a malloc over its mmap threshold (128 KiB at first) with a fresh
mmap, and returns freed memory at the top of the heap to the kernel once over
128 KiB. Each export request (up to 3 MiB, signals/batch.py) and gRPC's copy
of it were therefore faulted in page by page and handed back: at 50,000
remote-log entries/s that was ~17,000 page faults a second and ~10 % of the
sidecar's CPU in the kernel (bench/remote_log.py; docs/remote-log.md § Capacity).
Serving them from the heap and trimming it only past 16 MiB costs at most that
much memory held back.
"""
from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("otel_mta.memory")

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20   # above the largest export request
TRIM_THRESHOLD = 16 << 20


def keep_request_buffers() -> bool:
    """Tune glibc's malloc (a no-op elsewhere, e.g. musl). True if it was tuned."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.debug("mallopt refused the thresholds; keeping the C library's defaults")
    return ok
