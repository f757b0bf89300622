"""The WildDuck metrics poller: against the /metrics recorded from the real
WildDuck 1.51.1 (record_wildduck.py: fast, and for failures WildDuck will not
produce on demand), and against the real WildDuck of tests/stack."""
from __future__ import annotations

import asyncio
import imaplib
import time

import pytest
from aiohttp import web

from otel_mta import config
from otel_mta.sources.wildduck_metrics import WildDuckMetricsPoller
from tests.pollers.conftest import TESTDATA, area, assert_matches_catalog, closed_port, one, values
from tests.pollers.record_wildduck import exercise
from tests.stack.proc import LOOPBACK

RECORDED = (TESTDATA / "wildduck" / "metrics.txt").read_bytes()
FROM_METRICS = area("wildduck") - {"wildduck.user.count", "wildduck.storage.usage"}


class MetricsReplay:
    """An HTTP server answering /metrics with `body` (changeable between polls)."""

    def __init__(self, body: bytes):
        self.body = body
        self.status = 200
        self._runner = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    async def start(self) -> "MetricsReplay":
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, request):
        return web.Response(body=self.body, status=self.status, content_type="text/plain")

    async def stop(self) -> None:
        await self._runner.cleanup()


@pytest.fixture
async def replay():
    server = await MetricsReplay(RECORDED).start()
    yield server
    await server.stop()


@pytest.fixture
def poller_for(closing):
    def make(pipeline, url: str, **settings) -> WildDuckMetricsPoller:
        return closing(WildDuckMetricsPoller(pipeline, config.WildDuckMetricsSettings(url=url, **settings)))
    return make


def recorded_start() -> int:
    for line in RECORDED.decode().splitlines():
        if line.startswith("process_start_time_seconds "):
            return int(float(line.split()[1]) * 1e9)
    raise AssertionError("no process_start_time_seconds in the recording")


def by(points: dict, name: str, *keys: str) -> dict:
    """{attribute values in `keys` order: value} of one metric, added up over
    the attributes not named."""
    out: dict = {}
    for p in points.get(name, []):
        key = tuple(p.attrs.get(k) for k in keys)
        out[key] = out.get(key, 0) + p.value
    return out


async def test_wildduck_series_from_the_recorded_metrics(rig, poller_for, replay):
    build, export = rig
    pipeline = build()
    poller = poller_for(pipeline, replay.url)
    assert await poller.poll_once(), poller.last_error
    points = export()
    assert_matches_catalog(points)
    assert set(points) >= FROM_METRICS
    assert all(p.resource["service.name"] == "wildduck" for n in FROM_METRICS for p in points[n])
    # what record_wildduck.exercise() did to the real WildDuck
    assert by(points, "wildduck.auth.attempts", "wildduck.service", "wildduck.auth.scope", "wildduck.auth.result") \
        == {("imap", "imap", "success"): 1, ("imap", "imap", "fail"): 2, ("pop3", "pop3", "success"): 1}
    assert by(points, "wildduck.lmtp.recipients", "wildduck.lmtp.result") == {("accepted",): 1, ("rejected",): 1}
    size = one(points, "wildduck.lmtp.message.size", **{"wildduck.lmtp.result": "error"})
    assert size.value == 1 and size.buckets[0] == 1 and 0 < size.sum < 1024 and not size.has_min_max
    assert by(points, "wildduck.message.operation.duration", "wildduck.message.operation",
              "wildduck.message.source", "wildduck.message.result") == {("add", "lmtp", "error"): 1}
    login = one(points, "wildduck.imap.command.duration", **{"wildduck.command": "login",
                                                             "wildduck.command.result": "ok"})
    assert login.value == 1 and login.kind == "histogram" and login.start_ns == recorded_start()
    assert by(points, "wildduck.imap.command.duration", "wildduck.command", "wildduck.command.result")[
        ("login", "no")] == 2
    assert by(points, "wildduck.pop3.command.duration", "wildduck.command")[("stat",)] == 1
    # the API's status is the semantic-convention int; route patterns, not URLs
    api = by(points, "wildduck.api.request.duration", "http.request.method", "http.route",
             "http.response.status_code")
    assert api == {("POST", "/users", 200): 2, ("GET", "/users/:user", 404): 1}
    # connections: open ones back to 0, accepted ones counted with secure as a bool
    assert by(points, "wildduck.connection.count", "wildduck.service") == {("imap",): 0, ("pop3",): 0, ("lmtp",): 0}
    accepted = one(points, "wildduck.connection.accepted", **{"wildduck.service": "pop3"})
    assert accepted.attrs["wildduck.connection.secure"] is False and accepted.monotonic
    assert accepted.start_ns == recorded_start()
    up = by(points, "wildduck.service.up", "wildduck.service")
    assert up[("imap",)] == up[("lmtp",)] == up[("api",)] == 1 and up[("search_indexer",)] == 0
    assert by(points, "wildduck.task.queue.size", "wildduck.task.type", "wildduck.task.status") == {
        ("run-migrations", "waiting"): 1}
    jobs = by(points, "wildduck.job.queue.size", "wildduck.job.queue", "wildduck.job.state")
    assert {q for q, _ in jobs} == {"webhooks", "webhooks_post", "backlog_indexing"} and len(jobs) == 21
    # nothing of prom-client's process_*/nodejs_* and no double counts
    assert not [n for n in points if n.startswith(("process", "nodejs"))]
    assert one(points, "otelmta_poller_up", poller="wildduck_metrics").value == 1
    assert poller.summary().startswith("WildDuck 1.51.1; ")


async def test_changed_bucket_bounds_leave_that_family_out_and_say_so(rig, poller_for, replay, caplog):
    build, export = rig
    poller = poller_for(build(), replay.url)
    replay.body = RECORDED.replace(b'wildduck_imap_command_duration_seconds_bucket{le="0.001"',
                                   b'wildduck_imap_command_duration_seconds_bucket{le="0.002"')
    assert await poller.poll_once(), poller.last_error
    points = export()
    assert "wildduck.imap.command.duration" not in points
    assert "wildduck.pop3.command.duration" in points
    assert poller.summary().endswith(
        "left out (type or buckets not as the catalog declares): wildduck_imap_command_duration_seconds")
    assert "wildduck_imap_command_duration_seconds" in caplog.text
    # a family whose type changed is left out the same way
    replay.body = RECORDED.replace(b"# TYPE wildduck_tasks gauge", b"# TYPE wildduck_tasks counter")
    assert await poller.poll_once(), poller.last_error
    points = export()
    assert "wildduck.task.queue.size" not in points and "wildduck.job.queue.size" in points
    assert poller.summary().endswith("left out (type or buckets not as the catalog declares): wildduck_tasks_total")


@pytest.mark.parametrize("status, body, reason, detail", [
    (500, b"Internal error", "http_500", "GET /metrics: HTTP 500"),
    (200, b"\x00\xff<html>not what you asked for", "bad_response", "GET /metrics: not Prometheus text"),
])
async def test_a_failing_page_withdraws_the_series_and_says_why(rig, poller_for, replay, status, body, reason,
                                                                detail):
    build, export = rig
    poller = poller_for(build(), replay.url)
    assert await poller.poll_once()
    assert set(export()) >= FROM_METRICS
    replay.status, replay.body = status, body
    assert not await poller.poll_once()
    points = export()
    assert not set(points) & FROM_METRICS        # no stale WildDuck series
    failed = one(points, "otelmta_poller_failures", poller="wildduck_metrics")
    assert failed.attrs["reason"] == reason and detail in poller.last_error
    replay.status, replay.body = 200, RECORDED
    assert await poller.poll_once()
    assert set(export()) >= FROM_METRICS


async def test_nothing_listening_is_a_clean_check_failure(rig, poller_for):
    build, _ = rig
    result = await poller_for(build(), f"http://127.0.0.1:{closed_port()}/metrics").check()
    assert not result.ok and result.detail == "connection refused"


async def test_a_wildduck_restart_is_a_new_start_time_not_a_drop(rig, poller_for, replay):
    build, export = rig
    poller = poller_for(build(), replay.url)
    recorded = b"process_start_time_seconds %d" % (recorded_start() // 10**9)

    def started(at: int, accepted: int) -> bytes:
        return RECORDED.replace(recorded, b"process_start_time_seconds %d" % at).replace(
            b'wildduck_lmtp_recipients_total{result="accepted"} 1',
            b'wildduck_lmtp_recipients_total{result="accepted"} %d' % accepted)

    now = int(time.time())
    replay.body = started(now - 7200, 5)
    assert await poller.poll_once()
    before = one(export(), "wildduck.lmtp.recipients", **{"wildduck.lmtp.result": "accepted"})
    assert before.value == 5 and before.start_ns == (now - 7200) * 10**9
    replay.body = started(now - 60, 0)
    assert await poller.poll_once()
    after = one(export(), "wildduck.lmtp.recipients", **{"wildduck.lmtp.result": "accepted"})
    assert after.value == 0 and after.start_ns == (now - 60) * 10**9
    hist = one(export(), "wildduck.lmtp.message.size")
    assert hist.start_ns == (now - 60) * 10**9


async def test_against_the_real_wildduck(rig, poller_for, wildduck_factory):
    """The real WildDuck: the recorded traffic gives the recorded numbers, the
    live page still has every family the recording has, and an open IMAP
    connection shows in wildduck.connection.count and leaves it when closed
    (the review of WildDuck's PR #1093 found it never did; 1.51.1 does)."""
    build, export = rig
    wd = wildduck_factory()
    poller = poller_for(build(), wd.metrics_url)
    exercise(wd)
    assert await poller.poll_once(), poller.last_error
    points = export()
    assert_matches_catalog(points)
    assert set(points) >= FROM_METRICS
    assert by(points, "wildduck.lmtp.recipients", "wildduck.lmtp.result") == {("accepted",): 1, ("rejected",): 1}
    assert by(points, "wildduck.auth.attempts", "wildduck.auth.result") == {("success",): 2, ("fail",): 2}
    assert poller.summary().startswith(f"WildDuck {wd.version}; ")
    assert not poller._skipped, "WildDuck's bucket bounds differ from the catalog's"

    async def imap_open(want: int) -> float:
        deadline = time.monotonic() + 15
        while True:
            assert await poller.poll_once(), poller.last_error
            got = by(export(), "wildduck.connection.count", "wildduck.service")[("imap",)]
            if got == want or time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.2)

    m = imaplib.IMAP4(LOOPBACK, wd.imap_port, timeout=15)
    try:
        assert m.noop()[0] == "OK"
        assert await imap_open(1) == 1
    finally:
        m.logout()
    assert await imap_open(0) == 0
    # the recording is still what WildDuck serves: the same families
    live = {line.split()[2] for line in wd.metrics_text().splitlines() if line.startswith("# TYPE ")}
    recorded = {line.split()[2] for line in RECORDED.decode().splitlines() if line.startswith("# TYPE ")}
    assert live == recorded


async def test_a_truncated_or_mangled_page_is_a_clean_failure_or_a_partial_poll(rig, poller_for, replay):
    """Whatever WildDuck's page is cut or mangled into, a poll either succeeds
    or fails as bad_response: never an exception of our own (reason=error)."""
    build, export = rig
    poller = poller_for(build(), replay.url)
    text = RECORDED.decode()
    cuts = list(range(0, len(text), max(1, len(text) // 60)))
    mangled = [text[:n] for n in cuts] + [
        text.replace('le="', 'le="x'),                      # bucket bounds that are no numbers
        text.replace("_count{", "_cnt{"),                   # histograms without their count
        text.replace(" 1\n", " NaN\n"), text.replace(" 0\n", " +Inf\n"),
        text.replace('result="', 'result="\\u00e9' * 40),   # odd label values
    ]
    for body in mangled:
        replay.body = body.encode()
        ok = await poller.poll_once()
        points = export()
        reasons = {p.attrs["reason"] for p in points.get("otelmta_poller_failures", [])}
        assert reasons <= {"bad_response"}, (poller.last_error, body[-200:])
        if ok:
            assert_matches_catalog(points)


def test_histogram_series_beyond_the_limit_add_up_in_the_overflow_series():
    from otel_mta import catalog
    from otel_mta.resources import Resources
    from otel_mta.signals.metrics import MetricStore
    store = MetricStore(catalog.load(), max_series=10)
    hist = store.histogram("wildduck.imap.command.duration")
    buckets = [1] + [0] * 12
    res = Resources().producer("wildduck")
    for i in range(12):
        hist.observe((1, 0.001, buckets), res, (f"cmd{i}", "ok"))
    overflow = [p for (_, v), p in hist.series.items() if not isinstance(v, tuple)]
    assert len(hist.series) == 11 and overflow == [[2, 0.002, None, None, [2] + [0] * 12]]
    assert store.collect() is not None


def test_the_wildduck_pollers_load_nothing_while_off():
    """Off (the default), neither module, nor pymongo for them, is imported."""
    import subprocess
    import sys
    code = ("import sys; from otel_mta import config; from otel_mta.pipeline import Pipeline; "
            "from otel_mta.sources import enabled_sources; "
            "s = config.load(environ={'OTEL_MTA_DATA_DIR': '/nonexistent'}); "
            "enabled_sources(s, Pipeline(s, lambda *a: None)); "
            "print(sorted(m for m in sys.modules if m.startswith('otel_mta.sources.wildduck')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
