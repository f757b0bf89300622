"""What every poller shares: its own loop with an interval, a timeout per poll
and exponential backoff while the target keeps failing; a staged set of points
published all at once when a poll succeeds and withdrawn when it fails; the
`otelmta_poller_*` self-telemetry; and the `check` row.

Each poller runs as its own asyncio task and does only non-blocking I/O (or
blocking work in its own thread), and every poll is bounded by `timeout`, so a
slow or dead target never delays another poller or a receiver.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from otel_mta.aio import cancel_and_wait
from otel_mta.pipeline import RateLimitedLog
from otel_mta.sources.base import CheckResult, Source

log = logging.getLogger("otel_mta.poller")
CLOSE_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 2.0   # for the poll task to end after its cancel (then it is abandoned)


class PollError(Exception):
    """A poll failed for a reason the operator can act on.

    `reason` is a short, bounded label for metrics (refused, timeout,
    http_500, bad_response, ...); the message is the line `check` shows.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def in_daemon_thread(fn, name: str) -> asyncio.Future:
    """fn() in a thread of its own, as a future of the running loop.

    Not asyncio.to_thread: the default executor's threads are joined when the
    loop shuts down, so one system call that never returns (statvfs of a hung
    network mount, /proc of a process stuck in the kernel) would keep the
    sidecar from exiting. A daemon thread is abandoned at exit instead.
    """
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result, error) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            result, error = fn(), None
        except Exception as err:  # handed to the awaiting task
            result, error = None, err
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop closed while we were stuck
            pass

    # a poll that timed out no longer awaits it: its error is handled, not "never retrieved"
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    threading.Thread(target=work, name=name, daemon=True).start()
    return future


def redact_url(url: str) -> str:
    """The URL without user, password and query (which may hold secrets)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "(invalid URL)"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def describe_error(err: BaseException) -> tuple[str, str]:
    """(reason label, one line) for an exception from a client library."""
    if isinstance(err, PollError):
        return err.reason, str(err)
    if isinstance(err, (asyncio.TimeoutError, TimeoutError)):
        return "timeout", "timed out"
    if isinstance(err, ConnectionRefusedError):
        return "refused", "connection refused"
    if isinstance(err, OSError) and err.strerror:
        return "network", err.strerror.lower()
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return "error", text[:300]


class Points:
    """Points staged during one poll: {metric: {resource: {values: value}}} and
    the start time of each (metric, resource) whose values are totals. A
    histogram's value is (count, sum, bucket counts) for the catalog's bounds."""

    def __init__(self):
        self.data: dict = {}
        self.starts: dict = {}

    def add(self, metric: str, resource, values: tuple, value, start_ns: int | None = None) -> None:
        if value is None:
            return
        self.data.setdefault(metric, {}).setdefault(resource, {})[values] = value
        if start_ns is not None:
            self.starts[(metric, resource)] = start_ns

    def names(self) -> set:
        return set(self.data)


class StartTimes:
    """Start times of a target's totals, stable across polls.

    A start computed as now - uptime moves by a little every poll (uptime is
    rounded); it is kept until the target really restarted, i.e. the new start
    is later than the kept one by more than `slack_ns`.
    """

    def __init__(self, slack_ns: int = 2_000_000_000):
        self.slack_ns = slack_ns
        self._starts: dict = {}

    def get(self, key, start_ns: int) -> int:
        kept = self._starts.get(key)
        if kept is None or start_ns > kept + self.slack_ns:
            self._starts[key] = kept = start_ns
        return kept

    def reset(self, key, start_ns: int) -> int:
        self._starts[key] = start_ns
        return start_ns


class Poller(Source):
    """A source that asks a target every `interval` seconds.

    Subclasses implement `collect(points)` (raise PollError or let a client
    library's exception through) and may override `summary()` for `check` and
    `close()` to release clients.
    """

    name = "poller"
    transport = "poll"

    def __init__(self, pipeline, settings, target: str):
        super().__init__(pipeline)
        self.settings = settings
        self.interval = settings.interval
        self.timeout = settings.timeout
        self.max_backoff = max(settings.max_backoff, settings.interval)
        self.target = target
        self.up: bool | None = None
        self.failures = 0            # consecutive
        self.polls = 0
        self.last_error: str | None = None
        self.last_duration_s: float | None = None
        self._last_ok = 0.0
        self._owned: dict = {}       # metric -> set of resources this poller published
        self._task: asyncio.Task | None = None
        self._checking = False
        self._say = RateLimitedLog(log, 300.0)
        m = pipeline.metrics
        self._up_gauge = m.gauge("otelmta_poller_up")
        self._duration_gauge = m.gauge("otelmta_poller_duration")
        self._failed = m.counter("otelmta_poller_failures")

    @property
    def endpoint(self) -> str:
        return self.target

    # -- to implement -----------------------------------------------------------------
    async def collect(self, points: Points) -> None:
        raise NotImplementedError

    def summary(self) -> str:
        """One line for `otel-mta check` after a successful poll."""
        return "ok"

    def down_points(self, points: Points) -> None:
        """Points to publish while the target is down (e.g. mongodb.health 0)."""

    async def close(self) -> None:
        """Release clients."""

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"poller {self.name}")
        self.ready = True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not await cancel_and_wait(task, STOP_TIMEOUT_S):
            log.warning("%s poll task ignored its cancel for %.0f s; left behind", self.name, STOP_TIMEOUT_S)
        await self._close()
        self.ready = False

    async def _close(self) -> None:
        try:
            # a client stuck on a dead server must not hold up the shutdown
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.close()
        except Exception:  # closing a broken client must not stop the shutdown (TimeoutError included)
            log.debug("closing %s failed", self.name, exc_info=True)

    async def _run(self) -> None:
        while True:
            ok = await self.poll_once()
            await asyncio.sleep(self.interval if ok else self.backoff_delay())

    def backoff_delay(self) -> float:
        """interval, 2x, 4x, ... up to max_backoff, with +-10 % jitter so that
        sidecars restarted together do not poll a recovering server in step."""
        doublings = min(max(0, self.failures - 1), 32)  # a long outage must not overflow a float
        delay = min(self.interval * (2 ** doublings), self.max_backoff)
        return delay * random.uniform(0.9, 1.1)

    async def poll_once(self) -> bool:
        """One bounded poll; publishes its points, or withdraws them on failure."""
        points = Points()
        started = time.monotonic()
        error: tuple[str, str] | None = None
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for turns a cancel that
            # lands as collect() fails into that failure, and stop() never returns
            async with asyncio.timeout(self.timeout):
                await self.collect(points)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            error = ("timeout", f"no answer within {self.timeout:g}s")
        except Exception as err:  # whatever a client library raises, the loop goes on
            error = describe_error(err)
            if error[0] == "error":
                log.debug("%s poll of %s failed", self.name, self.target, exc_info=True)
        duration = time.monotonic() - started
        self.polls += 1
        self.last_duration_s = duration
        if error is None:
            self._publish(points)
            self.up, self.failures, self.last_error = True, 0, None
            self._last_ok = time.time()
        else:
            down = Points()
            self.down_points(down)
            self._publish(down)
            reason, message = error
            if self.up is not False and not self._checking:
                self._say(logging.WARNING, reason, "%s %s: %s", self.name, self.target, message)
            self.up, self.last_error = False, message
            self.failures += 1
            self._failed.add(1, self.pipeline.resources.own, (self.name, self.target, reason))
        own = self.pipeline.resources.own
        self._up_gauge.set(1 if error is None else 0, own, (self.name, self.target))
        self._duration_gauge.set(round(duration, 6), own, (self.name, self.target))
        return error is None

    def _publish(self, points: Points) -> None:
        """Replace every series this poller owns with `points`, all at once."""
        metrics = self.pipeline.metrics
        for name in set(self._owned) | points.names():
            per_resource = points.data.get(name, {})
            kind = metrics.catalog.metric(name).type
            inst = metrics.counter(name) if kind in ("counter", "updowncounter") \
                else metrics.histogram(name) if kind == "histogram" else metrics.gauge(name)
            for resource in self._owned.get(name, set()) | set(per_resource):
                inst.replace(resource, per_resource.get(resource, {}), points.starts.get((name, resource)))
            self._owned[name] = set(per_resource)

    # -- check and status ------------------------------------------------------------
    async def check(self) -> CheckResult:
        self._checking = True     # the row says it; no log line as well
        ok = await self.poll_once()
        try:
            detail = self.summary() if ok else self.last_error or "failed"
        finally:
            await self._close()
        return CheckResult(self.name, self.endpoint, ok, detail)

    def status(self) -> dict:
        return {"ready": self.ready, "endpoint": self.endpoint, "up": self.up,
                "last_error": self.last_error,
                "last_success_age_s": round(time.time() - self._last_ok, 1) if self._last_ok else None}
