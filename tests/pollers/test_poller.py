"""The machinery every poller shares (sources/poller.py): its own interval,
timeout and backoff; points published all at once or not at all; and one slow
or dead target never delaying another."""
from __future__ import annotations

import asyncio
import time

from otel_mta import config
from otel_mta.sources.mongodb import MongoDBPoller
from otel_mta.sources.poller import Points, PollError, Poller, StartTimes, redact_url
from otel_mta.sources.redis import RedisPoller
from otel_mta.sources.zonemta_api import ZoneMTAApiPoller
from tests.pollers.conftest import one


class Scripted(Poller):
    """A poller whose collect() does what the test says."""

    name = "zonemta_api"

    def __init__(self, pipeline, script, **settings):
        super().__init__(pipeline, config.ZoneMTAApiSettings(**settings), "http://scripted")
        self.script = script

    async def collect(self, points: Points) -> None:
        await self.script(self, points)


async def test_backoff_doubles_up_to_the_limit_with_jitter(rig):
    build, _ = rig
    poller = Scripted(build(), None, interval="10s", max_backoff="60s")
    delays = []
    for failures in range(1, 7):
        poller.failures = failures
        delays.append(poller.backoff_delay())
    for got, want in zip(delays, (10, 20, 40, 60, 60, 60)):
        assert want * 0.9 <= got <= want * 1.1, delays
    poller.failures = 5000  # a target down for days (or a tight loop of failures) must not overflow
    assert 54 <= poller.backoff_delay() <= 66


async def test_a_failed_poll_publishes_nothing_of_what_it_gathered(rig):
    build, export = rig
    pipeline = build()
    zone = pipeline.resources.zonemta

    async def half_then_fail(self, points):
        points.add("mta.queue.size", zone, ("default", "active"), 5)
        raise PollError("bad_response", "second half was garbage")

    async def good(self, points):
        points.add("mta.queue.size", zone, ("default", "active"), 1)

    poller = Scripted(pipeline, good)
    assert await poller.poll_once()
    assert one(export(), "mta.queue.size").value == 1
    poller.script = half_then_fail
    assert not await poller.poll_once()
    points = export()
    assert "mta.queue.size" not in points
    assert poller.status()["up"] is False and poller.status()["last_error"] == "second half was garbage"


async def test_an_unexpected_exception_is_a_failed_poll_not_a_dead_loop(rig):
    build, export = rig
    calls = []

    async def boom(self, points):
        calls.append(1)
        raise KeyError("surprise")

    poller = Scripted(build(), boom, interval="50ms", max_backoff="50ms")
    await poller.start()
    await asyncio.sleep(0.4)
    await poller.stop()
    assert len(calls) >= 4          # the loop kept going
    failed = one(export(), "otelmta_poller_failures")
    assert failed.attrs["reason"] == "error" and failed.value == len(calls)


async def test_a_cancel_is_never_lost_when_collect_fails_at_once(rig):
    """A poll whose collect raises at once (connection refused), cancelled at
    every step of the poll, 3,000 times: the cancel always ends the poll as
    cancelled. On 3.11 asyncio.wait_for() turned a cancel that landed just
    as collect raised into that error, i.e. an ordinary failed poll: the loop
    went on and stop() never returned (the CI hang). asyncio.timeout() lets
    it through."""
    build, _ = rig

    async def refused(self, points):
        await asyncio.sleep(0)      # a connect that is refused at once: one turn of the loop
        raise ConnectionRefusedError(111, "Connection refused")

    poller = Scripted(build(), refused)
    cancelled = finished = 0
    for i in range(3000):
        task = asyncio.create_task(poller.poll_once())
        for _ in range(i % 6):      # the cancel lands at a different step of the poll each time
            await asyncio.sleep(0)
        if task.done():
            finished += 1
            continue
        task.cancel()
        await asyncio.wait((task,), timeout=10)
        assert task.done(), f"round {i}: the poll did not end"
        assert task.cancelled(), f"round {i}: the cancel was lost, the poll returned {task.result()!r}"
        cancelled += 1
    assert cancelled >= 1000 and finished >= 1000


async def test_stop_never_hangs_on_a_poller_whose_collect_fails_at_once(rig):
    """The same through start() and stop(), as the sidecar's shutdown does it,
    3,000 times; each stop is bounded so that a regression fails this test
    instead of hanging it."""
    build, _ = rig
    calls = []

    async def refused(self, points):
        calls.append(1)
        raise ConnectionRefusedError(111, "Connection refused")

    poller = Scripted(build(), refused, interval="1ms", max_backoff="1ms")
    for i in range(3000):
        await poller.start()
        for _ in range(i % 9):      # the cancel lands at a different step of the loop each time
            await asyncio.sleep(0)
        try:
            async with asyncio.timeout(10):
                await poller.stop()
        except TimeoutError:
            raise AssertionError(f"stop() hung on round {i}") from None
        assert poller._task is None and not poller.ready
    assert len(calls) > 1000                    # the cancels really landed around failing polls


async def test_a_poll_task_that_swallows_its_cancel_is_abandoned_not_waited_for(rig):
    """A client library that catches CancelledError and goes on: stop() cancels
    it again and again, then leaves it behind after STOP_TIMEOUT_S, so the
    sidecar's shutdown goes on."""
    from otel_mta.sources import poller as poller_module
    build, _ = rig
    swallowed = []
    released = False

    async def stubborn(self, points):
        while not released:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed.append(1)
        raise asyncio.CancelledError

    poller = Scripted(build(), stubborn, interval="1s", timeout="1h")
    await poller.start()
    await asyncio.sleep(0.05)
    task = poller._task
    started = time.monotonic()
    await poller.stop()
    took = time.monotonic() - started
    assert poller_module.STOP_TIMEOUT_S - 0.2 <= took < poller_module.STOP_TIMEOUT_S + 2
    assert len(swallowed) >= 5 and not task.done()     # cancelled again and again, then left
    assert poller.ready is False
    released = True            # the test's own cleanup: the next cancel ends it
    task.cancel()
    await asyncio.wait((task,), timeout=5)
    assert task.cancelled()


def test_start_times_stay_put_until_the_target_restarts():
    starts = StartTimes()
    s0 = starts.get("redis", 1_000_000_000_000)
    assert starts.get("redis", 1_000_000_000_000 + 900_000_000) == s0      # rounding of uptime
    assert starts.get("redis", 1_000_000_000_000 - 5_000_000_000) == s0    # never backwards
    assert starts.get("redis", 1_000_000_000_000 + 60_000_000_000) == 1_000_000_000_000 + 60_000_000_000


def test_urls_lose_their_credentials():
    assert redact_url("redis://user:pw@cache:6380/2?ssl_ca_certs=/x") == "redis://cache:6380/2"
    assert redact_url("http://[::1]:12080/") == "http://[::1]:12080/"


async def test_one_dead_target_never_delays_another(rig, redis_server, zonemta_replay, blackhole):
    """A ZoneMTA API that hangs and a MongoDB that never answers, beside a
    healthy Redis: Redis keeps its cadence and the event loop stays responsive."""
    build, export = rig
    pipeline = build()
    zonemta_replay.delay_s = 30
    pollers = [
        RedisPoller(pipeline, config.RedisSettings(url=redis_server.url(), interval="100ms")),
        ZoneMTAApiPoller(pipeline, config.ZoneMTAApiSettings(url=zonemta_replay.url, interval="100ms",
                                                             timeout="1s")),
        MongoDBPoller(pipeline, config.MongoDBSettings(url=f"mongodb://127.0.0.1:{blackhole.port}/"
                                                           "?directConnection=true", interval="100ms",
                                                       timeout="1s")),
    ]
    worst_lag = 0.0

    async def ticker():
        nonlocal worst_lag
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.02)
            worst_lag = max(worst_lag, time.monotonic() - t - 0.02)

    tick = asyncio.create_task(ticker())
    for p in pollers:
        await p.start()
    await asyncio.sleep(2.5)
    for p in pollers:
        await p.stop()
    tick.cancel()
    redis, api, mongo = pollers
    assert redis.polls >= 15 and redis.up and redis.failures == 0
    assert api.up is False and api.last_error == "no answer within 1s"
    assert mongo.up is False
    # bounded, then backing off: waits of 0.1, 0.2, 0.4, 0.8, 1.6 s (-10 % jitter) allow at most 5 polls
    # in 2.5 s even when each fails at once (MongoDB's server selection gives up after 0.3 s, the API's
    # poll after its 1 s timeout); polled every 100 ms they would be 25
    assert 1 <= api.polls <= 5 and 1 <= mongo.polls <= 5, (api.polls, mongo.polls)
    assert worst_lag < 0.25, f"event loop stalled for {worst_lag:.3f}s"
    up = {p.attrs["poller"]: p.value for p in export(pipeline)["otelmta_poller_up"]}
    assert up == {"redis": 1, "zonemta_api": 0, "mongodb": 0}


def test_observed_totals_beyond_the_series_limit_add_up_in_the_overflow_series():
    from otel_mta import catalog
    from otel_mta.signals.metrics import MetricStore
    from tests.otlp_receiver import REQUEST, attrs

    class Res:
        attrs = {"server.address": "db"}
        encoded = b""

    store = MetricStore(catalog.load(), max_series=10)
    res = Res()
    ops = store.counter("mongodb.index.access.count")
    ops.replace(res, {(f"coll{i}", "zone-mta"): 10 for i in range(25)}, start_ns=123)
    payload, points = store.collect()
    dps = REQUEST["metrics"].FromString(payload).resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points
    assert points == 11 and sum(p.as_int for p in dps) == 250
    assert [p.as_int for p in dps if attrs(p.attributes) == {"otel.metric.overflow": True}] == [150]
    assert {p.start_time_unix_nano for p in dps} == {123}
    ops.replace(res, {})
    assert not ops.series and res not in ops.starts


def test_a_read_stuck_in_a_system_call_does_not_keep_the_process_alive():
    """A host poll blocked forever (statvfs of a hung network mount, say) times
    out, and the process still exits at once: the read runs in a daemon
    thread, not in asyncio's default executor, whose threads are joined at exit."""
    import subprocess
    import sys
    program = (
        "import asyncio, threading\n"
        "from otel_mta.sources.poller import in_daemon_thread\n"
        "async def main():\n"
        "    try:\n"
        "        await asyncio.wait_for(asyncio.shield(in_daemon_thread(threading.Event().wait, 't')), 0.2)\n"
        "    except TimeoutError:\n"
        "        print('timed out')\n"
        "    print(await in_daemon_thread(lambda: 6 * 7, 't'))\n"
        "asyncio.run(main())\n")
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["timed", "out", "42"]
    assert time.monotonic() - started < 10
