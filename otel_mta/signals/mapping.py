"""The interface every mapping of events to signals has: signals/mail.py
(ZoneMTA's entries), signals/inbound.py (Haraka's transactions). The pipeline
hands each its events and ticks them all (otel_mta/pipeline.py). What they
share is made once by the pipeline and passed in: the correlator (which trace
a message is in), the batchers, the metric store, the redactor, the
resources, the table of messages waiting for their final outcome
(signals/final.py); and signals/holding.py for what waits to learn its
trace."""
from __future__ import annotations

from typing import Protocol


class Mapping(Protocol):
    def handle(self, event) -> None:
        """Map one event of the internal model (otel_mta/model.py) to log
        records, spans and metric points."""

    def tick(self, now_ns: int | None = None, flush_all: bool = False) -> None:
        """Release what waited long enough (everything with flush_all, at shutdown)."""
