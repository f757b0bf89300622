"""Helpers for the poller tests: an in-process pipeline whose metric exports are
parsed like a receiver's (and recorded for the catalog coverage test), and a
ZoneMTA API server that replays answers recorded from the real ZoneMTA."""
from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from otel_mta import catalog
from tests.otlp_receiver import REQUEST, attrs, value_of
from tests.stack.proc import free_port

TESTDATA = Path(__file__).parent / "testdata"


@dataclass
class Point:
    resource: dict
    attrs: dict
    value: float
    start_ns: int
    kind: str          # gauge | sum | histogram
    monotonic: bool
    unit: str
    sum: float = 0.0   # histograms: value is the count
    buckets: tuple = ()
    bounds: tuple = ()
    has_min_max: bool = False


def export(pipeline, received) -> dict:
    """Collect the pipeline's metrics as the exporter would and parse them:
    {metric name: [Point]} of this one export."""
    collected = pipeline.metrics.collect()
    if not collected:
        return {}
    request = REQUEST["metrics"].FromString(collected[0])
    received.add("metrics", request)
    out: dict = {}
    for rm in request.resource_metrics:
        res = attrs(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                data = getattr(m, kind)
                for p in data.data_points:
                    extra = {}
                    if kind == "histogram":
                        value = p.count
                        extra = dict(sum=p.sum, buckets=tuple(p.bucket_counts), bounds=tuple(p.explicit_bounds),
                                     has_min_max=p.HasField("min") or p.HasField("max"))
                    else:
                        value = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                    out.setdefault(m.name, []).append(Point(
                        res, {kv.key: value_of(kv.value) for kv in p.attributes}, value,
                        getattr(p, "start_time_unix_nano", 0), kind,
                        getattr(data, "is_monotonic", False), m.unit, **extra))
    return out


def values(points: dict, name: str, **match) -> dict:
    """{attribute values tuple (sorted keys): value} of metric `name`, filtered by attributes."""
    out = {}
    for p in points.get(name, []):
        if all(p.attrs.get(k) == v for k, v in match.items()):
            out[tuple(sorted(p.attrs.items()))] = p.value
    return out


def one(points: dict, name: str, **match):
    found = [p for p in points.get(name, []) if all(p.attrs.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"{name} {match}: {len(found)} points: {[p.attrs for p in found]}"
    return found[0]


def area(name: str) -> set:
    """Catalog metrics of one area (catalog/<area>.yaml)."""
    return {m.name for m in catalog.load().metrics.values() if m.area == name}


def assert_matches_catalog(points: dict) -> None:
    """Every emitted point is what the catalog declares: type, unit, attributes."""
    c = catalog.load()
    kinds = {"counter": ("sum", True), "updowncounter": ("sum", False), "gauge": ("gauge", False),
             "histogram": ("histogram", False)}
    for name, pts in points.items():
        d = c.metric(name)
        for p in pts:
            assert (p.kind, p.monotonic) == kinds[d.type], name
            assert p.unit == d.unit, name
            assert set(p.attrs) <= set(d.attributes) | {"otel.metric.overflow"}, (name, p.attrs)
            if d.type == "histogram":
                assert p.bounds == d.buckets and len(p.buckets) == len(d.buckets) + 1, name
                assert sum(p.buckets) == p.value, name


@pytest.fixture
def rig(capture):
    """(make_pipeline(env) -> Pipeline, export() -> {name: [Point]})."""
    make, received = capture
    made = []

    def build(env: dict | None = None):
        pipeline = make({"OTEL_MTA_ZONEMTA_API_URL": "off", **(env or {})})
        made.append(pipeline)
        return pipeline

    def do_export(pipeline=None):
        return export(pipeline or made[-1], received)

    return build, do_export


@pytest.fixture
async def closing():
    """closing(poller) -> poller, closed (its clients released) after the test."""
    pollers = []

    def track(poller):
        pollers.append(poller)
        return poller

    yield track
    for poller in pollers:
        await poller.stop()


# -- ZoneMTA API replay ------------------------------------------------------------------
class ZoneMTAReplay:
    """aiohttp server answering /zones, /counter/zone/<zone> and /metrics with the
    recorded answers of the real ZoneMTA (testdata/zonemta, record_zonemta.py).

    `fail` ({path prefix: status}), `delay_s`, `garbage` and the recorded bodies
    can be changed between polls.
    """

    def __init__(self):
        d = TESTDATA / "zonemta"
        self.zones = (d / "zones.json").read_bytes()
        self.counters = {p.stem.removeprefix("counter_"): p.read_bytes() for p in d.glob("counter_*.json")}
        self.metrics = (d / "metrics.txt").read_bytes()
        self.fail: dict = {}
        self.delay_s = 0.0
        self.requests: list[str] = []
        self._runner = None
        self._stopping = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "ZoneMTAReplay":
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._stopping.set()
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.requests.append(path)
        if self.delay_s:
            try:   # a hung ZoneMTA, until the test ends
                await asyncio.wait_for(self._stopping.wait(), self.delay_s)
            except asyncio.TimeoutError:
                pass
        for prefix, status in self.fail.items():
            if path.startswith(prefix):
                if status == "garbage":
                    return web.Response(body=b"\x00\xff<html>not what you asked for", content_type="text/plain")
                return web.json_response({"error": "Service not yet started"}, status=status)
        if path == "/zones":
            return web.Response(body=self.zones, content_type="application/json")
        if path.startswith("/counter/zone/"):
            zone = path.removeprefix("/counter/zone/")
            body = self.counters.get(zone)
            if body is None:   # ZoneMTA counts any zone name, known or not
                body = ('{"zone":"all","active":{"entries":[{"key":"%s","value":0}],"rows":0},'
                        '"deferred":{"entries":[{"key":"%s","value":0}],"rows":0}}' % (zone, zone)).encode()
            return web.Response(body=body, content_type="application/json")
        if path == "/metrics":
            return web.Response(body=self.metrics, content_type="text/plain")
        return web.json_response({"code": "ResourceNotFound"}, status=404)


@pytest.fixture
async def zonemta_replay():
    server = await ZoneMTAReplay().start()
    yield server
    await server.stop()


async def until_deferral_stored(zonemta, zone: str = "default", timeout: float = 30) -> None:
    """Waits until the real ZoneMTA's /counter answers {active 0, deferred 1}
    for `zone`: its one delivery's deferral is stored (the next try is minutes
    away). Before that, ZoneMTA's own count is in flux: /counter counts active,
    then deferred, in two queries, and an answer straddling the update counts
    the delivery in both states (as does any two-query count of the queue)."""
    from otel_mta.sources.zonemta_api import queue_count
    deadline = time.monotonic() + timeout
    while True:
        doc = zonemta.api_json("/counter/zone/" + zone)
        got = {state: queue_count(doc, state, zone) for state in ("active", "deferred")}
        if got == {"active": 0, "deferred": 1}:
            return
        assert time.monotonic() < deadline, f"ZoneMTA's /counter for {zone} after {timeout:g}s: {got}"
        await asyncio.sleep(0.1)


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    return free_port()


class Blackhole:
    """A TCP listener that accepts and never answers: a hung server."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def blackhole():
    b = Blackhole()
    yield b
    b.close()


@pytest.fixture
def tls_files(tmp_path):
    """A throw-away CA and a server certificate for the loopback address:
    (ca.pem, cert.pem, key.pem)."""
    import trustme
    from tests.stack.proc import LOOPBACK
    ca = trustme.CA()
    cert = ca.issue_cert(LOOPBACK)
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return ca_file, cert_file, key_file
