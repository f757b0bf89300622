"""The export lanes: one per signal, each taking its requests from the queue in
order and sending them, with its own backoff, so a backend that refuses or
cannot take traces does not hold back logs or metrics. The pipeline never
waits for the network.

What an answer means follows the OTLP specification (senders.py says which):
- accepted: counted as sent (a partial success's rejected items as lost);
- retryable (the collector down, busy, overloaded): sent again after the
  delay the receiver asked for, or with exponential backoff and jitter; the
  lane holds its requests meanwhile, in order, in memory and the spool;
- refused for its size (HTTP 413, gRPC RESOURCE_EXHAUSTED without RetryInfo):
  split in halves and sent again; one record too large even alone is dropped
  and counted (`too_large`);
- anything else is permanent: dropped, counted, logged once per interval.

Requests over `max_request_size` are split when they are queued, so a receiver
behind a body-size limit normally never sees one.

The lanes are coroutines. In the sidecar they run as tasks on the event loop:
gRPC is sent with grpc.aio there and HTTP with aiohttp, so no second Python
thread competes for the GIL. (A worker thread did: the main thread, busy with
datagrams, held the GIL, the thread waited up to the 5 ms switch interval for
it several times per request, exports fell behind and, at 50,000 entries/s,
most entries were lost.) Without an event loop (tests, tools) `start()` runs
them on a thread with a loop of its own.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time

from otel_mta.export import split
from otel_mta.export.queue import ExportQueue
from otel_mta.export.senders import Result
from otel_mta.export.spool import SIGNALS
from otel_mta.pipeline import RateLimitedLog

log = logging.getLogger("otel_mta.export")
POLL_S = 0.2  # how often an idle lane looks at the queue and the stop flag
DEFAULT_MAX_REQUEST_BYTES = 512 << 10   # config.py documents why
_DONE, _RETRY = "done", "retry"         # what became of a request; or a list: its halves, to send next


class Stats:
    """Counters the lanes write and the metric collection reads."""

    def __init__(self):
        self.sent = dict.fromkeys(SIGNALS, 0)
        self.failed: dict = {}            # (signal, reason) -> items
        self.retries = 0
        self.splits = 0                   # requests divided in two (over the cap, or refused for size)
        self.requests = 0
        self.last_error = ""
        self.last_success_ns = 0

    def fail(self, signal: str, reason: str, count: int) -> None:
        key = (signal, reason)
        self.failed[key] = self.failed.get(key, 0) + count


class Exporter:
    def __init__(self, sender, queue: ExportQueue, initial_backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, max_request_size: int = DEFAULT_MAX_REQUEST_BYTES):
        self.sender = sender
        self.queue = queue
        self.stats = Stats()
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_request_size = max_request_size
        self._stopping = False
        self._drain_deadline = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None   # only without a caller's loop
        self._task: asyncio.Task | None = None
        self._wake = {s: asyncio.Event() for s in SIGNALS}   # set when a lane has work (or at a stop)
        self._healthy = dict.fromkeys(SIGNALS, True)         # False while that lane's sends fail
        self._holding = dict.fromkeys(SIGNALS, 0)            # requests a lane has in flight or to retry
        self._say = RateLimitedLog(log, 10.0)

    @property
    def name(self) -> str:
        return self.sender.name

    @property
    def healthy(self) -> bool:
        """False while any signal's export is failing."""
        return all(self._healthy.values())

    @property
    def failing(self) -> list[str]:
        """The signals whose export is failing now."""
        return [s for s, ok in self._healthy.items() if not ok]

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run the lanes on `loop` (the caller's running event loop), or on a thread of their own."""
        if loop is not None:
            self._loop = loop
            self._task = loop.create_task(self._work(), name="otel-mta-export")
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._work(),),
                                        name="otel-mta-export", daemon=True)
        self._thread.start()

    def submit(self, signal: str, payload: bytes, count: int) -> None:
        """Called on the event loop: never blocks. A request over the size cap
        (a large metric collection, a batch of huge records) is split first."""
        pieces = [(payload, count)]
        if len(payload) > self.max_request_size and count > 1:
            try:
                pieces = split.fit(signal, payload, self.max_request_size)
                self.stats.splits += len(pieces) - 1
            except split.Unsplittable as err:
                log.error("cannot split an oversized %s request: %s", signal, err)
        for payload, count in pieces:
            if not self.queue.put(signal, payload, count):
                self.stats.fail(signal, "queue_full", count)
        self._notify(signal)

    def _notify(self, signal: str | None = None) -> None:
        if self._loop is None or self._loop.is_closed():
            return  # not started (the lanes look at the queue first thing), or done
        events = [self._wake[signal]] if signal else list(self._wake.values())
        for event in events:
            if self._thread is None:
                event.set()  # same thread as the lanes' loop
            else:
                self._loop.call_soon_threadsafe(event.set)

    async def stop_async(self, timeout_s: float) -> None:
        """Send what is queued for up to `timeout_s`, then give up (spooled data stays on disk)."""
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.stop, timeout_s)
            return
        self._begin_stop(timeout_s)
        if self._task is not None:
            try:
                async with asyncio.timeout(timeout_s + 1):
                    await asyncio.shield(self._task)
            except TimeoutError:
                # a send that outlives the budget: cancel; each lane still puts back what it held
                self._task.cancel()
                try:
                    async with asyncio.timeout(1.0):
                        await self._task
                except (asyncio.CancelledError, TimeoutError):
                    pass
        self._close()

    def stop(self, timeout_s: float) -> None:
        """Like stop_async, for lanes on their own thread (start() without a loop)."""
        self._begin_stop(timeout_s)
        if self._thread is not None:
            self._thread.join(timeout_s + 1)
            if not self._thread.is_alive():
                self._loop.close()
        self._close()

    async def settle(self, signals, timeout_s: float) -> bool:
        """Wait up to `timeout_s` until these lanes hold nothing: no request queued
        in memory, in flight or waiting for a retry (what is spooled does not
        count: a stop leaves it for the next start). At shutdown the app lets logs
        and spans settle before it takes the last metrics, so those say what was
        really sent and left, not the moment before the final flush."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(self.queue.in_memory(s) or self._holding[s] for s in signals):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def _begin_stop(self, timeout_s: float) -> None:
        self._drain_deadline = time.monotonic() + timeout_s
        self._stopping = True
        self._notify()

    def _close(self) -> None:
        left = len(self.queue.spool) if self.queue.spool else 0
        if left:
            log.warning("%d export requests stay spooled for the next start", left)
        self.sender.close()
        if self.queue.spool is not None:
            self.queue.spool.close()

    # -- the lanes ----------------------------------------------------------------
    async def _work(self) -> None:
        lanes = [asyncio.ensure_future(self._lane(s)) for s in SIGNALS]
        try:
            for signal, outcome in zip(SIGNALS, await asyncio.gather(*lanes, return_exceptions=True)):
                if isinstance(outcome, Exception):
                    log.error("the %s export lane stopped: %r (please report this)", signal, outcome,
                              exc_info=outcome)
        finally:
            for lane in lanes:
                lane.cancel()
            await self.sender.aclose()

    async def _lane(self, signal: str) -> None:
        retry: collections.deque = collections.deque()   # requests to send first, oldest first
        flight: collections.deque = collections.deque()  # (request, task), oldest first
        try:
            await self._run(signal, retry, flight)
            # answers still on their way decide whether those requests were sent
            while flight:
                item, task = flight[0]
                outcome = self._account(item, await task)
                flight.popleft()
                if outcome == _RETRY:
                    retry.append(item)
                elif outcome != _DONE:
                    retry.extend(outcome)
        finally:
            # stopped, or cancelled when a send outlived the budget: nothing held is dropped silently
            held = [item for item, _ in flight] + list(retry)
            for _, task in flight:
                task.cancel()
            self._put_back(signal, held)

    async def _run(self, signal: str, retry: collections.deque, flight: collections.deque) -> None:
        backoff = self.initial_backoff_s
        in_order = False  # one request at a time, from a failure until the backlog is sent
        # Several requests in flight while all is well: a busy event loop gets
        # round to each answer late, and waiting for one at a time made the
        # export fall behind. While failing, until what was queued meanwhile is
        # sent, and while replaying the spool: one at a time, in order. The
        # file sink sends one at a time (a file is not written by several threads).
        window = getattr(self.sender, "window", 1)
        while not (self._stopping and time.monotonic() >= self._drain_deadline):
            spooling = self.queue.spooled(signal) > 0
            while len(flight) < (1 if in_order or spooling else window):
                item = retry.popleft() if retry else await self._take(signal)
                if item is None:
                    break
                self.stats.requests += 1
                flight.append((item, asyncio.ensure_future(self._send(item[0], item[1]))))
            self._holding[signal] = len(flight) + len(retry)
            if not flight:
                in_order = False  # nothing waits: the backlog is sent
                if self._stopping:
                    return  # memory drained (a spool, if any, waits for the next start)
                await self._idle(signal, POLL_S)
                continue
            item, task = flight[0]
            result = await task
            flight.popleft()
            outcome = self._account(item, result)
            if outcome == _DONE:
                backoff = self.initial_backoff_s
                continue
            if outcome != _RETRY:  # halves of a request refused for its size: next, in order
                retry.extendleft(reversed(outcome))
                continue
            # a retryable failure: the window's other answers come in, and what
            # failed goes back in front of the queue, in order
            failed = [item]
            while flight:
                later, task = flight[0]
                later_outcome = self._account(later, await task)
                flight.popleft()
                if later_outcome == _RETRY:
                    failed.append(later)
                elif later_outcome != _DONE:
                    failed.extend(later_outcome)
            retry.extendleft(reversed(failed))
            in_order = True
            delay = result.retry_after if result.retry_after is not None else backoff * random.uniform(0.8, 1.2)
            backoff = min(backoff * 2, self.max_backoff_s)
            if self._stopping:
                if time.monotonic() + min(delay, POLL_S) > self._drain_deadline:
                    return
                await asyncio.sleep(min(delay, POLL_S))
            else:
                await self._idle(signal, delay, until_stop=True)
            self.stats.retries += 1

    def _put_back(self, signal: str, held: list) -> None:
        """What a stopping lane still holds: back to the front of its spool, in order, or counted lost."""
        while self.queue.in_memory(signal):
            held.append(self.queue.get(signal))
        if not held:
            return
        if self.queue.spool is not None and self.queue.spool.prepend(signal, held):
            return
        for _, _, count in held:
            self.stats.fail(signal, "shutdown", count)

    async def _take(self, signal: str):
        """The lane's oldest request, or None (when stopping, only from memory:
        what is spooled waits for the next start)."""
        q = self.queue
        if q.in_memory(signal):
            return q.get(signal)
        if self._stopping or not q.spooled(signal):
            return None
        # reading the spool touches the disk: not on the loop
        return await asyncio.get_running_loop().run_in_executor(None, q.get, signal)

    async def _idle(self, signal: str, seconds: float, until_stop: bool = False) -> None:
        """Wait `seconds`, or less: until the lane has a request (or, with until_stop, a stop)."""
        wake = self._wake[signal]
        wake.clear()
        try:
            async with asyncio.timeout(seconds):  # not wait_for: 3.11's can swallow a cancel
                while True:
                    await wake.wait()
                    if not until_stop or self._stopping:
                        return
                    wake.clear()  # a new request does not end a backoff
        except TimeoutError:
            pass

    async def _send(self, signal: str, payload: bytes) -> Result:
        try:
            return await self.sender.send_async(signal, payload)
        except Exception as err:  # a sender bug must not end the lane
            log.exception("sending to %s failed unexpectedly (please report this)", self.sender.endpoint)
            return Result(False, error=f"{type(err).__name__}: {err}")

    def _account(self, item: tuple, result: Result):
        """Account for one answer: _DONE, _RETRY (send it again later), or the
        request's halves (send them next)."""
        signal, payload, count = item
        if result.ok:
            self.stats.sent[signal] += count - result.rejected
            if result.rejected:
                self.stats.fail(signal, "rejected", result.rejected)
            self.stats.last_success_ns = time.time_ns()
            if not self._healthy[signal]:
                log.info("export of %s to %s recovered", signal, self.sender.endpoint)
            self._healthy[signal] = True
            return _DONE
        self.stats.last_error = f"{signal}: {result.error}"
        if result.too_large:
            halves = self._halve(signal, payload, count)
            if halves:
                self.stats.splits += 1
                self._say(logging.WARNING, f"{signal}.split",
                          "the receiver refused a request of %d %s (%d bytes) for its size (%s): "
                          "sending it in halves; lower exporter.max_request_size to avoid this",
                          count, signal, len(payload), result.error)
                return halves
            self.stats.fail(signal, "too_large", count)
            self._say(logging.ERROR, f"{signal}.too_large",
                      "dropped %d %s of %d bytes: the receiver refuses it for its size even alone (%s)",
                      count, signal, len(payload), result.error)
            return _DONE
        if not result.retryable:
            self.stats.fail(signal, "permanent_error", count)
            self._say(logging.ERROR, f"{signal}.permanent",
                      "dropped %d %s: %s refused them with a permanent error: %s",
                      count, signal, self.sender.endpoint, result.error)
            return _DONE
        if self._healthy[signal]:
            log.warning("export of %s to %s failing (%s); retrying with backoff, queueing meanwhile",
                        signal, self.sender.endpoint, result.error)
        self._healthy[signal] = False
        return _RETRY

    def _halve(self, signal: str, payload: bytes, count: int) -> list | None:
        if count < 2:
            return None
        try:
            halves = split.halve(signal, payload)
        except split.Unsplittable:
            return None
        return [(signal, p, n) for p, n in halves] if len(halves) == 2 else None
