"""The ZoneMTA API poller: against answers recorded from the real ZoneMTA 3.11
(fast, and for failures ZoneMTA will not produce on demand), and against the
real ZoneMTA of tests/stack."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from otel_mta import config
from otel_mta.sources.zonemta_api import ZoneMTAApiPoller, queue_count
from tests.pollers.conftest import (TESTDATA, area, assert_matches_catalog, closed_port, one,
                                    until_deferral_stored, values)


@pytest.fixture
def poller_for(closing):
    def make(pipeline, url: str, **settings) -> ZoneMTAApiPoller:
        return closing(ZoneMTAApiPoller(pipeline, config.ZoneMTAApiSettings(url=url, **settings)))
    return make


def recorded_start() -> int:
    for line in (TESTDATA / "zonemta" / "metrics.txt").read_text().splitlines():
        if line.startswith("process_start_time_seconds "):
            return int(float(line.split()[1]) * 1e9)
    raise AssertionError("no process_start_time_seconds in the recording")


async def test_queue_and_zonemta_series_from_the_recorded_api(rig, poller_for, zonemta_replay):
    build, export = rig
    pipeline = build()
    poller = poller_for(pipeline, zonemta_replay.url)
    assert await poller.poll_once()
    points = export()
    assert_matches_catalog(points)
    assert set(points) >= area("zonemta_api")
    zonemta = pipeline.resources.zonemta.attrs
    assert values(points, "mta.queue.size") == {
        (("mta.queue.state", "active"), ("mta.zone", "bounces")): 0,
        (("mta.queue.state", "deferred"), ("mta.zone", "bounces")): 0,
        (("mta.queue.state", "active"), ("mta.zone", "default")): 0,
        (("mta.queue.state", "deferred"), ("mta.zone", "default")): 1}
    assert all(p.resource == zonemta for p in points["mta.queue.size"])
    # ZoneMTA's own counters, with its labels, from its process start
    status = {(p.attrs["zonemta.delivery.status"], p.attrs["mta.zone"]): p.value
              for p in points["zonemta.delivery.status"]}
    assert status == {("delivered", "default"): 1, ("deferred", "default"): 1, ("rejected", "default"): 1,
                      ("delivered", "bounces"): 1}
    push = one(points, "zonemta.message.push", **{"zonemta.push.result": "success"})
    assert push.value == 3 and push.kind == "sum" and push.monotonic
    assert push.start_ns == recorded_start()
    assert one(points, "zonemta.bounce.generation").value == 1
    assert one(points, "zonemta.connection.pool.size").kind == "gauge"
    # nothing of prom-client's process_*/nodejs_* and no zonemta_queue_size twin
    assert not [n for n in points if n.startswith(("process", "nodejs", "zonemta.queue"))]
    up = one(points, "otelmta_poller_up", poller="zonemta_api")
    assert up.value == 1 and up.attrs["target"] == zonemta_replay.url
    assert one(points, "otelmta_poller_duration", poller="zonemta_api").value > 0
    assert poller.summary() == "zones: bounces, default; 0 queued, 1 deferred; 10 series"


def test_counter_answers_in_both_shapes_zonemta_has_used():
    recorded = json.loads((TESTDATA / "zonemta" / "counter_default.json").read_text())
    assert queue_count(recorded, "deferred", "default") == 1
    assert queue_count(recorded, "active", "default") == 0
    # STACK-FACTS: older ZoneMTA answered plain numbers
    assert queue_count({"zone": "all", "active": 4, "deferred": 2}, "active", "default") == 4


@pytest.mark.parametrize("failure, reason, detail", [
    ({"/metrics": 500}, "http_500", "GET /metrics: HTTP 500"),
    ({"/counter": 500}, "http_500", "HTTP 500"),
    ({"/zones": "garbage"}, "bad_response", "GET /zones: not JSON"),
    ({"/metrics": "garbage"}, "bad_response", "GET /metrics: not Prometheus text"),
])
async def test_a_failing_api_withdraws_its_series_and_says_why(rig, poller_for, zonemta_replay,
                                                               failure, reason, detail):
    build, export = rig
    pipeline = build()
    poller = poller_for(pipeline, zonemta_replay.url)
    assert await poller.poll_once()
    assert "mta.queue.size" in export()
    zonemta_replay.fail = failure
    assert not await poller.poll_once()
    points = export()
    # no stale queue depth or ZoneMTA series while the API fails
    assert not set(points) & area("zonemta_api")
    assert one(points, "otelmta_poller_up", poller="zonemta_api").value == 0
    failed = one(points, "otelmta_poller_failures", poller="zonemta_api")
    assert failed.attrs["reason"] == reason and failed.value == 1
    assert detail in poller.last_error
    # and it comes back by itself
    zonemta_replay.fail = {}
    assert await poller.poll_once()
    points = export()
    assert one(points, "otelmta_poller_up", poller="zonemta_api").value == 1
    assert len(points["mta.queue.size"]) == 4


async def test_an_api_that_hangs_times_out_within_the_timeout(rig, poller_for, zonemta_replay):
    build, export = rig
    poller = poller_for(build(), zonemta_replay.url, timeout="300ms")
    zonemta_replay.delay_s = 5
    started = time.monotonic()
    assert not await poller.poll_once()
    assert time.monotonic() - started < 1.5
    assert poller.last_error == "no answer within 0.3s"
    assert one(export(), "otelmta_poller_failures", poller="zonemta_api").attrs["reason"] == "timeout"


async def test_nothing_listening_is_a_clean_check_failure(rig, poller_for):
    build, _ = rig
    poller = poller_for(build(), f"http://127.0.0.1:{closed_port()}")
    result = await poller.check()
    assert not result.ok and result.detail == "connection refused"
    assert result.endpoint.startswith("http://127.0.0.1:")


async def test_zones_that_vanish_stop_being_exported(rig, poller_for, zonemta_replay):
    build, export = rig
    poller = poller_for(build(), zonemta_replay.url)
    zonemta_replay.zones = b'[{"name":"bounces"},{"name":"default"},{"name":"old-pool"}]'
    assert await poller.poll_once()
    assert {p.attrs["mta.zone"] for p in export()["mta.queue.size"]} == {"bounces", "default", "old-pool"}
    zonemta_replay.zones = b'[{"name":"bounces"},{"name":"default"}]'
    assert await poller.poll_once()
    assert {p.attrs["mta.zone"] for p in export()["mta.queue.size"]} == {"bounces", "default"}


async def test_a_zonemta_restart_is_a_new_start_time_not_a_drop(rig, poller_for, zonemta_replay):
    build, export = rig
    poller = poller_for(build(), zonemta_replay.url)
    assert await poller.poll_once()
    before = one(export(), "zonemta.message.push", **{"zonemta.push.result": "success"})
    restarted = int(time.time())
    zonemta_replay.metrics = zonemta_replay.metrics \
        .replace(b'zonemta_message_push{result="success"} 3', b'zonemta_message_push{result="success"} 1') \
        .replace(f"process_start_time_seconds {recorded_start() // 10**9}".encode(),
                 f"process_start_time_seconds {restarted}".encode())
    assert await poller.poll_once()
    after = one(export(), "zonemta.message.push", **{"zonemta.push.result": "success"})
    assert after.value == 1 and after.start_ns == restarted * 10**9 > before.start_ns


async def test_without_process_start_a_counter_going_down_restarts_the_series(rig, poller_for, zonemta_replay):
    build, export = rig
    poller = poller_for(build(), zonemta_replay.url)
    zonemta_replay.metrics = b"\n".join(
        line for line in zonemta_replay.metrics.splitlines() if not line.startswith(b"process_start"))
    assert await poller.poll_once()
    first = one(export(), "zonemta.bounce.generation")
    await asyncio.sleep(0.01)
    assert await poller.poll_once()
    assert one(export(), "zonemta.bounce.generation").start_ns == first.start_ns   # stable while counting
    zonemta_replay.metrics = zonemta_replay.metrics.replace(b"zonemta_bounce_generation 1",
                                                            b"zonemta_bounce_generation 0")
    assert await poller.poll_once()
    reset = one(export(), "zonemta.bounce.generation")
    assert reset.value == 0 and reset.start_ns > first.start_ns


async def test_against_the_real_zonemta(rig, poller_for, zonemta, smtp_sink):
    """The real API: a deferred delivery shows as mta.queue.size{deferred} = 1,
    ZoneMTA's own counters come through, and the recorded answers still have
    the shapes the live ZoneMTA serves."""
    build, export = rig
    poller = poller_for(build(), zonemta.api_url)
    smtp_sink.reply("later", "451 4.3.0 Try again later")
    zonemta.send("sender@example.com", ["later@example.org"])
    smtp_sink.wait_for_refused(1)
    # ZoneMTA's /counter counts active, then deferred, in two queries: while the
    # deferral is being stored, one answer can count the one delivery in both
    # states (seen under load). Poll once ZoneMTA has stored it.
    await until_deferral_stored(zonemta)
    assert await poller.poll_once(), poller.last_error
    points = export()
    deferred = values(points, "mta.queue.size", **{"mta.zone": "default", "mta.queue.state": "deferred"})
    status = values(points, "zonemta.delivery.status", **{"zonemta.delivery.status": "deferred"})
    assert list(deferred.values()) == [1]
    assert list(status.values()) == [1]
    assert values(points, "mta.queue.size", **{"mta.queue.state": "active"}) == {
        (("mta.queue.state", "active"), ("mta.zone", "bounces")): 0,
        (("mta.queue.state", "active"), ("mta.zone", "default")): 0}
    assert one(points, "zonemta.message.push", **{"zonemta.push.result": "success"}).value == 1
    assert_matches_catalog(points)
    assert poller.summary().startswith("zones: bounces, default; 0 queued, 1 deferred;")
    # the recording is still what ZoneMTA serves
    live = zonemta.api_json("/counter/zone/default")
    recorded = json.loads((TESTDATA / "zonemta" / "counter_default.json").read_text())
    assert _shape(live) == _shape(recorded), (live, recorded)
    zones = zonemta.api_json("/zones")
    assert _shape(zones) == _shape(json.loads((TESTDATA / "zonemta" / "zones.json").read_text())), zones


def _shape(doc):
    if isinstance(doc, dict):
        return {k: _shape(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_shape(doc[0])] if doc else []
    return type(doc).__name__


async def test_large_answers_are_read_whole_and_huge_ones_refused(rig, poller_for, zonemta_replay):
    build, export = rig
    poller = poller_for(build(), zonemta_replay.url)
    # a /metrics of ~300 KiB, as many zones and prom-client series would make it
    filler = b"".join(b'nodejs_active_handles{type="Socket%d"} 1\n' % i for i in range(8000))
    zonemta_replay.metrics = filler + zonemta_replay.metrics
    assert await poller.poll_once(), poller.last_error
    assert one(export(), "zonemta.bounce.generation").value == 1
    zonemta_replay.metrics = b"# " + b"x" * (5 << 20) + b"\n"
    assert not await poller.poll_once()
    assert poller.last_error == "GET /metrics: answer larger than 4 MiB"
