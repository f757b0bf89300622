"""The export worker: one thread that takes requests from the queue in order and
sends them, retrying with exponential backoff and jitter while the collector is
unreachable. The event loop never waits for the network."""
from __future__ import annotations

import logging
import random
import threading
import time

from otel_mta.export.queue import ExportQueue

log = logging.getLogger("otel_mta.export")


class Stats:
    """Counters the worker thread writes and the metric collection reads."""

    def __init__(self):
        self.sent = {"logs": 0, "traces": 0, "metrics": 0}
        self.failed: dict = {}            # (signal, reason) -> items
        self.retries = 0
        self.requests = 0
        self.last_error = ""
        self.last_success_ns = 0

    def fail(self, signal: str, reason: str, count: int) -> None:
        key = (signal, reason)
        self.failed[key] = self.failed.get(key, 0) + count


class Exporter:
    def __init__(self, sender, queue: ExportQueue, initial_backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0):
        self.sender = sender
        self.queue = queue
        self.stats = Stats()
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self._stop = threading.Event()
        self._drain_deadline = 0.0
        self._thread = threading.Thread(target=self._run, name="otel-mta-export", daemon=True)
        self.healthy = True   # False while the collector is failing

    @property
    def name(self) -> str:
        return self.sender.name

    def start(self) -> None:
        self._thread.start()

    def submit(self, signal: str, payload: bytes, count: int) -> None:
        """Called on the event loop: never blocks."""
        if not self.queue.put(signal, payload, count):
            self.stats.fail(signal, "queue_full", count)

    def stop(self, timeout_s: float) -> None:
        """Send what is queued for up to `timeout_s`, then give up (spooled data stays on disk)."""
        self._drain_deadline = time.monotonic() + timeout_s
        self._stop.set()
        self.queue.wake()
        self._thread.join(timeout_s + 1)
        left = len(self.queue.spool) if self.queue.spool else 0
        if left:
            log.warning("%d export requests stay spooled for the next start", left)
        self.sender.close()
        if self.queue.spool is not None:
            self.queue.spool.close()

    def _run(self) -> None:
        leftover = []
        while True:
            if self._stop.is_set() and (time.monotonic() >= self._drain_deadline or self.queue.bytes == 0):
                break  # memory drained (a spool, if any, waits for the next start) or out of time
            item = self.queue.get(timeout=0.2)
            if item is None:
                continue
            if not self._deliver(*item):
                leftover.append(item)
                break
        # what is still in memory: back to the front of the spool, in order, or counted lost
        while self.queue.bytes:
            leftover.append(self.queue.get(timeout=0))
        if leftover and self.queue.spool is not None and self.queue.spool.prepend(leftover):
            return
        for signal, _, count in leftover:
            self.stats.fail(signal, "shutdown", count)

    def _deliver(self, signal: str, payload: bytes, count: int) -> bool:
        """Send one request; False only when shutdown cut the retries short."""
        backoff = self.initial_backoff_s
        while True:
            self.stats.requests += 1
            result = self.sender.send(signal, payload)
            if result.ok:
                self.stats.sent[signal] += count - result.rejected
                if result.rejected:
                    self.stats.fail(signal, "rejected", result.rejected)
                self.stats.last_success_ns = time.time_ns()
                if not self.healthy:
                    log.info("export to %s recovered", self.sender.endpoint)
                self.healthy = True
                return True
            self.stats.last_error = result.error
            if not result.retryable:
                log.error("export of %d %s to %s failed permanently: %s", count, signal,
                          self.sender.endpoint, result.error)
                self.stats.fail(signal, "permanent_error", count)
                return True
            if self.healthy:
                log.warning("export to %s failing (%s); retrying with backoff, queueing meanwhile",
                            self.sender.endpoint, result.error)
            self.healthy = False
            delay = result.retry_after or backoff * random.uniform(0.8, 1.2)
            if self._stop.is_set():
                if time.monotonic() + min(delay, 0.2) > self._drain_deadline:
                    return False
                time.sleep(min(delay, 0.2))
            else:
                self._stop.wait(delay)
            self.stats.retries += 1
            backoff = min(backoff * 2, self.max_backoff_s)
