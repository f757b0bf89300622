"""The interface every source implements; app.py starts, checks and stops them."""
from __future__ import annotations

import errno
from dataclasses import dataclass


@dataclass
class CheckResult:
    source: str
    endpoint: str
    ok: bool
    detail: str
    in_use: bool = False   # the port is taken (check.py asks a running otel-mta about it)

    @property
    def status(self) -> str:
        return "ok" if self.ok else "FAIL"


def cannot_bind(source: str, endpoint: str, err: OSError, what: str = "") -> CheckResult:
    """The `check` row of a listener whose port could not be bound."""
    return CheckResult(source, endpoint, False, f"cannot bind{what}: {err.strerror or err}",
                       in_use=err.errno == errno.EADDRINUSE)


class Source:
    """A receiver (listens) or a poller (asks). Runs on the event loop."""

    name = "source"
    transport = ""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.ready = False

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    async def start(self) -> None:
        """Bind or connect; raise OSError with a clear message if impossible."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop receiving; whatever was received is in the pipeline afterwards."""
        raise NotImplementedError

    async def check(self) -> CheckResult:
        """Try the source once for `otel-mta check`."""
        raise NotImplementedError

    def flush_counts(self) -> None:
        """Add counts the source keeps locally (accepted, kernel drops) to the
        metric store now: the status endpoint reads the store between exports."""

    def status(self) -> dict:
        """A short summary for the health endpoint and the status line."""
        return {"ready": self.ready, "endpoint": self.endpoint}
