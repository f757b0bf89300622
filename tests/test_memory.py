"""Export requests are megabytes. While the exporter is busy, the sidecar keeps
their buffers in the heap instead of having glibc map and fault them in anew
for each request; when it is quiet again it gives the memory back
(otel_mta/memory.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from otel_mta import memory

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 100
PAGES = REQUESTS * 2 * (3 << 20) // 4096  # a 3 MiB request and its copy, every page touched

SCRIPT = """
import resource, sys
from otel_mta.memory import HIGH, RequestBuffers

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(%d):
        request = bytearray(3 << 20)  # zero-filled: every page written
        copy = bytes(request)         # what gRPC keeps while it sends
        del request, copy
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

buffers = RequestBuffers()
quiet = faults()
buffers.update(HIGH + 1)  # busy
busy = faults()
held = rss()
buffers.update(0)         # quiet again
print(quiet, busy, held - rss())
""" % REQUESTS


@pytest.mark.skipif(not sys.platform.startswith("linux") or not memory.RequestBuffers().available,
                    reason="glibc's malloc")
def test_request_buffers_are_reused_while_busy_and_given_back_after():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True)
    quiet, busy, given_back = map(int, out.stdout.split())
    assert quiet > PAGES // 2       # glibc's defaults: every request faulted in anew
    assert busy < PAGES // 10       # busy: the same pages serve every request
    assert given_back > 4 << 20     # quiet again: what was kept (two 3 MiB buffers) is returned


class FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


def test_the_thresholds_follow_the_export_rate_with_hysteresis():
    libc = FakeLibc()
    buffers = memory.RequestBuffers(libc)
    buffers.update(10_000)
    assert libc.calls == [] and not buffers.keeping
    buffers.update(memory.HIGH + 1)
    assert buffers.keeping and libc.calls == [("mallopt", memory.M_MMAP_THRESHOLD, memory.KEEP_MMAP),
                                              ("mallopt", memory.M_TRIM_THRESHOLD, memory.KEEP_TRIM)]
    libc.calls.clear()
    buffers.update(10_000)  # between LOW and HIGH: no flapping
    assert buffers.keeping and libc.calls == []
    buffers.update(memory.LOW - 1)
    assert not buffers.keeping and libc.calls == [("mallopt", memory.M_MMAP_THRESHOLD, memory.DEFAULT),
                                                  ("mallopt", memory.M_TRIM_THRESHOLD, memory.DEFAULT),
                                                  ("malloc_trim", 0)]
