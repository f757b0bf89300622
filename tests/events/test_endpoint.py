"""The HTTP contract of POST /v1/events (docs/events.md): the real aiohttp
server of the sidecar in this process, a real HTTP client, and the answers the
plugin acts on (2xx done, 408/429/5xx retry, other 4xx drop)."""
from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import subprocess
import sys
import zlib

import aiohttp
import pytest

from otel_mta.config import load as load_settings
from otel_mta.pipeline import Pipeline
from otel_mta.sources.events_http import EventsSource
from tests.conftest import ROOT, free_port
from tests.otlp_receiver import REQUEST, Received, attrs

EXAMPLE = json.loads((ROOT / "schema" / "examples" / "batch.v1.json").read_text())
KEY = "s3cret-key-for-tests"


class Endpoint:
    def __init__(self, env: dict, events: dict):
        self.rx = Received()
        settings = load_settings(environ={"OTEL_MTA_DATA_DIR": "/nonexistent",
                                          "OTEL_MTA_EVENTS_ENDPOINT": "127.0.0.1:0", **env})
        self.pipeline = Pipeline(settings, lambda s, b, n: self.rx.add(s, REQUEST[s].FromString(b)))
        self.source = EventsSource(self.pipeline, settings.sources.events.model_copy(update=events))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.source.port}/v1/events"

    async def post(self, body: bytes, headers: dict | None = None, gz: bool = True, url: str | None = None):
        h = {"Content-Type": "application/json", **({"Content-Encoding": "gzip"} if gz else {}), **(headers or {})}
        async with aiohttp.ClientSession() as s:
            async with s.post(url or self.url, data=gzip.compress(body) if gz else body, headers=h) as r:
                return r.status, await r.json(), r.headers

    def collect(self) -> Received:
        self.pipeline.mail.tick(flush_all=True)
        self.pipeline.flush()
        payload, _ = self.pipeline.metrics.collect()
        self.rx.add("metrics", REQUEST["metrics"].FromString(payload))
        return self.rx

    def points(self, name: str, key: str = "reason") -> dict:
        return {a.get(key): p.as_int for a, p in self.rx.last_points(name)}


@pytest.fixture
async def endpoint():
    started = []

    async def start(events: dict | None = None, **env) -> Endpoint:
        ep = Endpoint(env, events or {})
        await ep.source.start()
        started.append(ep)
        return ep

    yield start
    for ep in started:
        await ep.source.stop()


def body(doc=EXAMPLE) -> bytes:
    return json.dumps(doc).encode()


def events_batch(events: list) -> bytes:
    return body(dict(EXAMPLE, events=events))


async def test_200_means_the_batch_is_in_the_pipeline(endpoint):
    ep = await endpoint()
    status, reply, _ = await ep.post(body())
    assert status == 200 and reply == {"accepted": 10, "rejected": 0, "duplicates": 0}
    # nothing else ran on the loop since the answer: the records are already in the pipeline
    assert ep.pipeline.logs.pending == 2 and ep.pipeline.spans.pending >= 3
    rx = ep.collect()
    assert {attrs(r.attributes)["mta.action"] for _, r in rx.log_records()} == {"QUEUED", "ACCEPTED"}
    assert ep.points("otelmta_events_requests", "http.response.status_code") == {200: 1}


async def test_api_key_is_required_when_configured(endpoint):
    ep = await endpoint(OTEL_MTA_EVENTS_API_KEY=KEY)
    wrong_same_length = "x" * len(KEY)
    for headers in ({}, {"X-Api-Key": wrong_same_length}, {"X-Api-Key": "short"}, {"X-Api-Key": KEY + "x"}):
        status, reply, _ = await ep.post(body(), headers)
        assert status == 401 and reply == {"error": "missing or wrong X-Api-Key"}, headers
    assert ep.pipeline.logs.pending == 0, "nothing from a refused request reaches the pipeline"
    status, _, _ = await ep.post(body(), {"X-Api-Key": KEY})
    assert status == 200
    ep.collect()
    assert ep.points("otelmta_receiver_refused_records") == {"unauthorized": 4}
    assert ep.source.status()["auth"] == "api_key"
    check = await ep.source.check()
    assert check.ok and "X-Api-Key required" in check.detail


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))   # no packet is sent: this only picks the outgoing address
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


async def test_without_a_key_only_loopback_clients_are_served(endpoint):
    """"Protected mode": the default endpoint listens on every address, but with
    no key configured it answers 403 to anything that is not loopback."""
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address to test from")
    ep = await endpoint(OTEL_MTA_EVENTS_ENDPOINT="0.0.0.0:0")
    status, reply, _ = await ep.post(body(), url=f"http://{addr}:{ep.source.port}/v1/events")
    assert status == 403 and "only loopback clients" in reply["error"]
    status, _, _ = await ep.post(body())
    assert status == 200
    check = await ep.source.check()
    assert check.ok and "only loopback clients are served" in check.detail
    assert ep.source.status()["auth"] == "loopback_only"


async def test_body_limits_413(endpoint):
    ep = await endpoint({"max_body": 1 << 20, "max_events": 5})
    # body over the limit (announced by Content-Length)
    big = body(dict(EXAMPLE, events=[dict(EXAMPLE["events"][1], id=str(i)) for i in range(4)])) + b" " * (1 << 20)
    status, reply, _ = await ep.post(big, gz=False)
    assert status == 413 and reply["max_body"] == 1 << 20
    # a gzip bomb: ~100 KiB on the wire, 100 MiB inflated; inflating stops at the limit
    bomb = gzip.compress(b"[" + b" " * (100 << 20) + b"]", 9)
    assert len(bomb) < 200_000
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with aiohttp.ClientSession() as s:
        async with s.post(ep.url, data=bomb, headers={"Content-Encoding": "gzip"}) as r:
            assert r.status == 413 and "once decompressed" in (await r.json())["error"]
    assert loop.time() - t0 < 2
    # more events than max_events
    status, reply, _ = await ep.post(events_batch([EXAMPLE["events"][1]] * 6))
    assert status == 413 and reply["max_events"] == 5
    ep.collect()
    assert ep.points("otelmta_receiver_refused_records") == {"too_large": 2, "too_many_events": 1}


async def test_a_chunked_body_over_the_limit_is_413_too(endpoint):
    ep = await endpoint({"max_body": 4096})

    async def chunks():
        for _ in range(10):
            yield b" " * 1000

    async with aiohttp.ClientSession() as s:
        async with s.post(ep.url, data=chunks()) as r:
            assert r.status == 413


@pytest.mark.parametrize("raw,encoding,reason", [
    (b"not gzip at all", "gzip", "body is not valid gzip/deflate data"),
    (gzip.compress(b'{"schema": "otel-mta.events/v1"}')[:-12], "gzip", "truncated gzip/deflate data"),
    (gzip.compress(b"{}") + b"trailing", "gzip", "trailing data after the compressed body"),
    (gzip.compress(b"{not json"), "gzip", "body is not JSON"),
    (gzip.compress(b"[" * 5000 + b"]" * 5000), "gzip", "body is not JSON"),   # deeper than orjson allows
    (gzip.compress(b"[]"), "gzip", "not an otel-mta.events batch (v1 or v2)"),
    (gzip.compress(body(dict(EXAMPLE, schema="otel-mta.events/v3"))), "gzip", "not an otel-mta.events batch (v1 or v2)"),
    (gzip.compress(body(dict(EXAMPLE, source={"service": "zonemta"}))), "gzip", "not an otel-mta.events batch (v1 or v2)"),
    (zlib.compress(body()), "deflate", None),
    (body(), "identity", None),
])
async def test_a_broken_body_is_400_with_a_reason(endpoint, raw, encoding, reason):
    ep = await endpoint()
    async with aiohttp.ClientSession() as s:
        async with s.post(ep.url, data=raw, headers={"Content-Encoding": encoding}) as r:
            reply = await r.json()
            if reason is None:
                assert r.status == 200 and reply["accepted"] == 10
            else:
                assert r.status == 400 and reply["error"].startswith(reason), reply


async def test_unsupported_encoding_is_415(endpoint):
    ep = await endpoint()
    status, reply, _ = await ep.post(body(), {"Content-Encoding": "br"}, gz=False)
    assert status == 415 and "gzip" in reply["error"]


async def test_invalid_events_are_dropped_one_by_one(endpoint):
    ep = await endpoint()
    good = EXAMPLE["events"][:3]
    bad = [{"id": "b1", "type": "log.entry", "time_ms": -1, "entry": {"id": "q"}},
           {"id": "b2", "type": "no.such.type", "time_ms": 1},
           "not an object"]
    status, reply, _ = await ep.post(events_batch([bad[0], *good, bad[1], bad[2]]))
    assert status == 200
    assert reply == {"accepted": 3, "rejected": 3, "duplicates": 0,
                     "errors": [{"index": 0, "reason": "bad_time_ms"}, {"index": 4, "reason": "unknown_type"},
                                {"index": 5, "reason": "not_an_object"}]}
    # nothing usable at all: 400, so the plugin counts the batch as failed
    status, reply, _ = await ep.post(events_batch(bad))
    assert status == 400 and reply["accepted"] == 0 and reply["rejected"] == 3
    ep.collect()
    assert ep.points("otelmta_receiver_refused_records") == {"bad_time_ms": 2, "unknown_type": 2, "not_an_object": 2}
    assert ep.points("otelmta_receiver_accepted_records", "receiver") == {"events": 3}


async def test_a_retried_batch_is_ignored_as_duplicates_and_counted(endpoint):
    ep = await endpoint()
    assert (await ep.post(body()))[1]["accepted"] == 10
    status, reply, _ = await ep.post(body())
    assert status == 200 and reply == {"accepted": 0, "rejected": 0, "duplicates": 10}
    rx = ep.collect()
    assert len(rx.log_records()) == 2
    assert ep.points("otelmta_receiver_deduplicated_records") == {"duplicate_id": 10}
    assert ep.points("otelmta_receiver_dropped_records") == {}   # nothing was lost
    assert ep.points("otelmta_receiver_accepted_records", "receiver") == {"events": 10}


async def test_a_full_export_queue_pushes_back_with_503(endpoint):
    ep = await endpoint()
    ep.pipeline.congested = lambda: True
    status, reply, headers = await ep.post(body())
    assert status == 503 and headers["Retry-After"] == "2"
    assert ep.pipeline.logs.pending == 0
    ep.pipeline.congested = lambda: False
    assert (await ep.post(body()))[0] == 200
    ep.collect()
    assert ep.points("otelmta_receiver_pushed_back_requests") == {"congested": 1}


async def test_a_body_that_does_not_arrive_is_408(endpoint):
    ep = await endpoint({"read_timeout": 0.3})
    reader, writer = await asyncio.open_connection("127.0.0.1", ep.source.port)
    writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"schema\"")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_shutdown_answers_503_then_stops_listening(endpoint):
    ep = await endpoint()
    port = ep.source.port
    ep.source._stopping = True   # what stop() sets first: requests still arriving get told to retry
    assert (await ep.post(body()))[0] == 503
    ep.collect()
    assert ep.points("otelmta_receiver_pushed_back_requests") == {"stopping": 1}
    await ep.source.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await ep.post(body())
    assert not ep.source.ready and port


async def test_other_paths_and_methods(endpoint):
    ep = await endpoint()
    async with aiohttp.ClientSession() as s:
        async with s.get(ep.url) as r:
            assert r.status == 405
        async with s.post(ep.url.replace("/v1/events", "/v1/logs"), data=b"{}") as r:
            assert r.status == 404


async def test_check_reports_a_port_in_use():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    settings = load_settings(environ={"OTEL_MTA_DATA_DIR": "/nonexistent",
                                      "OTEL_MTA_EVENTS_ENDPOINT": f"127.0.0.1:{taken.getsockname()[1]}"})
    src = EventsSource(Pipeline(settings, lambda *a: None), settings.sources.events)
    result = await src.check()
    assert not result.ok and "cannot bind" in result.detail
    with pytest.raises(OSError):
        await src.start()
    taken.close()
    free = await EventsSource(Pipeline(settings, lambda *a: None), settings.sources.events.model_copy(
        update={"endpoint": ("127.0.0.1", 0)})).check()
    assert free.ok and "port is free" in free.detail and "loopback clients only" in free.detail


def test_otel_mta_check_says_how_the_endpoint_is_protected(tmp_path, grpc_receiver):
    base = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            "OTEL_MTA_REMOTE_LOG_ENDPOINT": "off", "OTEL_MTA_GELF_ENDPOINT": "off", "OTEL_MTA_ZONEMTA_API_URL": "off",
            "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint,
            "OTEL_MTA_EVENTS_ENDPOINT": f"0.0.0.0:{free_port()}"}

    def check(**env):
        res = subprocess.run([sys.executable, "-m", "otel_mta", "check"], capture_output=True, text=True,
                             env={**base, **env}, cwd=tmp_path, timeout=30)
        assert res.returncode == 0, res.stdout + res.stderr
        [row] = [r for r in res.stdout.splitlines() if r.startswith("events ")]
        return row, res.stdout + res.stderr

    row, _ = check()
    assert " ok " in row and "only loopback clients are served (others get 403)" in row
    row, out = check(OTEL_MTA_EVENTS_API_KEY=KEY)
    assert " ok " in row and "X-Api-Key required" in row and KEY not in out
