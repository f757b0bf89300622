"""Export requests are megabytes, built and freed many times a second. With
glibc's defaults each one was faulted in page by page (otel_mta/memory.py);
the sidecar tunes malloc at start so the pages are reused."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 100
PAGES = REQUESTS * 2 * (3 << 20) // 4096  # a 3 MiB request and its copy, every page touched

SCRIPT = """
import resource, sys
from otel_mta.memory import keep_request_buffers
if sys.argv[1] == "tuned":
    assert keep_request_buffers()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(%d):
    request = bytearray(3 << 20)  # zero-filled: every page written
    copy = bytes(request)         # what gRPC keeps while it sends
    del request, copy
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""" % REQUESTS


def page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_request_sized_buffers_are_reused_not_faulted_in_each_time():
    tuned = page_faults("tuned")
    assert tuned < PAGES // 10, f"{tuned} page faults for {REQUESTS} requests"
    # glibc's defaults, for comparison: this is what the tuning is for
    assert page_faults("default") > PAGES // 2
