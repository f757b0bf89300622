"""The export worker: takes requests from the queue in order and sends them,
retrying with exponential backoff and jitter while the collector is
unreachable. The pipeline never waits for the network.

The worker is one coroutine. In the sidecar it runs as a task on the event
loop: gRPC is sent with grpc.aio there, so no second Python thread competes
for the GIL. (A worker thread did: the main thread, busy with datagrams, held
the GIL, the thread waited up to the 5 ms switch interval for it several times
per request, exports fell behind and, at 50,000 entries/s, most entries were
lost.) Senders without an asyncio API (OTLP/HTTP, the file sink) run in the
loop's executor. Without an event loop (tests, tools) `start()` runs the same
coroutine on a thread with a loop of its own.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time

from otel_mta.export.queue import ExportQueue
from otel_mta.export.senders import Result

log = logging.getLogger("otel_mta.export")
POLL_S = 0.2  # how often an idle worker looks at the queue and the stop flag
WINDOW = 4    # requests in flight at once while the collector answers


class Stats:
    """Counters the worker writes and the metric collection reads."""

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
        self._stopping = False
        self._drain_deadline = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None   # only without a caller's loop
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None        # set when there is work (or a stop)
        self.healthy = True   # False while the collector is failing

    @property
    def name(self) -> str:
        return self.sender.name

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run the worker on `loop` (the caller's running event loop), or on a thread of its own."""
        if loop is not None:
            self._loop = loop
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._work(), name="otel-mta-export")
            self._task.add_done_callback(self._ended)
            return
        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._work(),),
                                        name="otel-mta-export", daemon=True)
        self._thread.start()

    def submit(self, signal: str, payload: bytes, count: int) -> None:
        """Called on the event loop: never blocks."""
        if not self.queue.put(signal, payload, count):
            self.stats.fail(signal, "queue_full", count)
            return
        self._notify()

    def _ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the export worker stopped: %r (please report this); nothing more is exported",
                      task.exception(), exc_info=task.exception())

    def _notify(self) -> None:
        if self._loop is None or self._loop.is_closed():
            return  # not started (the worker looks at the queue first thing), or done
        if self._thread is None:
            self._wake.set()  # same thread as the worker's loop
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def stop_async(self, timeout_s: float) -> None:
        """Send what is queued for up to `timeout_s`, then give up (spooled data stays on disk)."""
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.stop, timeout_s)
            return
        self._begin_stop(timeout_s)
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s + 1)
            except asyncio.TimeoutError:
                self._task.cancel()
            except Exception:  # reported by _ended
                pass
        self._close()

    def stop(self, timeout_s: float) -> None:
        """Like stop_async, for a worker on its own thread (start() without a loop)."""
        self._begin_stop(timeout_s)
        if self._thread is not None:
            self._thread.join(timeout_s + 1)
            if not self._thread.is_alive():
                self._loop.close()
        self._close()

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

    # -- the worker ---------------------------------------------------------------
    async def _work(self) -> None:
        retry: collections.deque = collections.deque()   # requests to send again first, oldest first
        flight: collections.deque = collections.deque()  # (request, task), oldest first
        backoff = self.initial_backoff_s
        in_order = False  # one request at a time, from a failure until the backlog is sent
        # Several requests in flight while all is well: a busy event loop gets
        # round to each answer late, and waiting for one at a time made the
        # export fall behind. While failing, until what was queued meanwhile is
        # sent, and while replaying the spool: one at a time, in order. Senders
        # without an asyncio API send one at a time (a file is not written by
        # several threads, an HTTP pool is not overrun).
        window = WINDOW if hasattr(self.sender, "send_async") else 1
        while not (self._stopping and time.monotonic() >= self._drain_deadline):
            spooling = self.queue.spool is not None and len(self.queue.spool) > 0
            while len(flight) < (1 if in_order or spooling else window):
                item = retry.popleft() if retry else await self._take()
                if item is None:
                    break
                self.stats.requests += 1
                flight.append((item, asyncio.ensure_future(self._send(item[0], item[1]))))
            if not flight:
                in_order = False  # nothing waits: the backlog is sent
                if self._stopping:
                    break  # memory drained (a spool, if any, waits for the next start)
                await self._idle(POLL_S)
                continue
            item, task = flight.popleft()
            result = await task
            if self._done(item, result):
                backoff = self.initial_backoff_s
                continue
            # a retryable failure: the window's other answers come in, and what
            # failed goes back in front of the queue, in order
            failed = [item]
            while flight:
                later, task = flight.popleft()
                if not self._done(later, await task):
                    failed.append(later)
            retry.extendleft(reversed(failed))
            in_order = True
            delay = result.retry_after or backoff * random.uniform(0.8, 1.2)
            backoff = min(backoff * 2, self.max_backoff_s)
            if self._stopping:
                if time.monotonic() + min(delay, POLL_S) > self._drain_deadline:
                    break
                await asyncio.sleep(min(delay, POLL_S))
            else:
                await self._idle(delay, until_stop=True)
            self.stats.retries += 1
        # answers still on their way decide whether those requests were sent
        for item, task in flight:
            if not self._done(item, await task):
                retry.append(item)
        aclose = getattr(self.sender, "aclose", None)
        if aclose is not None:
            await aclose()
        # what is left in memory: back to the front of the spool, in order, or counted lost
        leftover = list(retry)
        while self.queue.bytes:
            leftover.append(self.queue.get(timeout=0))
        if leftover and self.queue.spool is not None and self.queue.spool.prepend(leftover):
            return
        for signal, _, count in leftover:
            self.stats.fail(signal, "shutdown", count)

    async def _take(self):
        """The oldest queued request, or None (when stopping, only from memory:
        what is spooled waits for the next start)."""
        q = self.queue
        if self._stopping and not q.bytes:
            return None
        if q.spool is not None and len(q.spool):  # reading the spool touches the disk: not on the loop
            return await asyncio.get_running_loop().run_in_executor(None, q.get, 0)
        return q.get(timeout=0)

    async def _idle(self, seconds: float, until_stop: bool = False) -> None:
        """Wait `seconds`, or less: until a request is queued (or, with until_stop, a stop)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        self._wake.clear()
        try:
            while True:
                await asyncio.wait_for(self._wake.wait(), max(0.0, end - loop.time()))
                if not until_stop or self._stopping:
                    return
                self._wake.clear()  # a new request does not end a backoff
        except asyncio.TimeoutError:
            pass

    async def _send(self, signal: str, payload: bytes) -> Result:
        try:
            send_async = getattr(self.sender, "send_async", None)
            if send_async is not None:
                return await send_async(signal, payload)
            return await asyncio.get_running_loop().run_in_executor(None, self.sender.send, signal, payload)
        except Exception as err:  # a sender bug must not end the worker
            log.exception("sending to %s failed unexpectedly (please report this)", self.sender.endpoint)
            return Result(False, error=f"{type(err).__name__}: {err}")

    def _done(self, item: tuple, result: Result) -> bool:
        """Account for one answer; False when the request should be sent again."""
        signal, _, count = item
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
        return False
