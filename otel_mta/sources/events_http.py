"""The plugin's events endpoint: `POST /v1/events`, gzip JSON batches from
zonemta-plugin/ (docs/events.md), on aiohttp. What the events mean is in
events_ingest.py; this module is the HTTP contract:

| answer | when |
|---|---|
| 200 `{"accepted", "rejected", "duplicates", "errors"?}` | the batch is in the pipeline; invalid events were dropped one by one (counted) |
| 400 `{"error", ...}` | the body is not a batch (bad gzip or JSON, wrong `schema`, bad `source`), or no event in it is usable |
| 401 | a key is configured and `X-Api-Key` does not match (compared in constant time) |
| 403 | no key is configured and the client is not on loopback ("protected mode") |
| 408 | the body did not arrive within `read_timeout` |
| 413 | body over `max_body` (compressed, or once decompressed), or more than `max_events` events |
| 415 | a Content-Encoding other than gzip, deflate or identity |
| 503 + Retry-After | the export queue is (nearly) full, too many requests at once, or shutting down |

The plugin retries 408, 429 and 5xx with the same body and drops the batch on
other 4xx, so only what retrying cannot fix is a 4xx. Duplicate event ids from
those retries are dropped in events_ingest.py.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import zlib

import orjson
from aiohttp import web

from otel_mta.pipeline import RateLimitedLog
from otel_mta.sources.base import CheckResult, Source, cannot_bind
from otel_mta.sources.events_ingest import Ingest, Result
from otel_mta.sources.events_schema import Invalid, check_batch

log = logging.getLogger("otel_mta.events")
PATH = "/v1/events"
WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15, "identity": None, "": None}
SLICE = 500           # events mapped between two yields to the event loop (~10 ms)
MAX_READING = 32      # request bodies being received at once (memory: MAX_READING x max_body)
RETRY_AFTER_S = "2"


def _loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        ip = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _bind_check(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))


class Reply(Exception):
    """An early answer: status, body, headers; `reason` is counted as refused,
    `pushback` (a 503's reason) as pushed back."""

    def __init__(self, status: int, error: str, reason: str | None = None, headers: dict | None = None,
                 pushback: str | None = None, **extra):
        super().__init__(error)
        self.status = status
        self.body = {"error": error, **extra}
        self.reason = reason
        self.headers = headers
        self.pushback = pushback


class EventsSource(Source):
    name = "events"
    transport = "http"

    def __init__(self, pipeline, settings):
        super().__init__(pipeline)
        self.settings = settings
        self.host, self.port = settings.endpoint
        key = settings.api_key
        # compare digests: equal lengths, so not even the key's length leaks
        self._key = hashlib.sha256(key.encode()).digest() if key else None
        self.max_body = settings.max_body
        self.ingest = Ingest(pipeline, settings.dedup_window, self.name, self.transport)
        self._runner: web.AppRunner | None = None
        self._reading = 0
        self._stopping = False
        self._say = RateLimitedLog(log, 60.0)
        self._requests = pipeline.metrics.counter("otelmta_events_requests")
        self._own = pipeline.resources.own

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{PATH}"

    @property
    def protected(self) -> bool:
        """No key: only loopback clients are served."""
        return self._key is None

    def _auth_note(self) -> str:
        if not self.protected:
            return "X-Api-Key required"
        if _loopback(self.host):
            return "no OTEL_MTA_EVENTS_API_KEY: loopback clients only"
        return ("no OTEL_MTA_EVENTS_API_KEY: only loopback clients are served (others get 403); "
                "set a key to accept other hosts")

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_post(PATH, self._post)
        # we decompress ourselves, with our own limit and error answers
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, auto_decompress=False,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]
        if self.protected and not _loopback(self.host):
            log.warning("events endpoint %s has no API key (OTEL_MTA_EVENTS_API_KEY): serving loopback "
                        "clients only", self.endpoint)
        self._stopping = False
        self.ready = True

    async def stop(self) -> None:
        self._stopping = True
        if self._runner is not None:
            await self._runner.cleanup()   # requests being handled finish first
            self._runner = None
        self.ready = False

    async def check(self) -> CheckResult:
        if self._runner is not None:
            return CheckResult(self.name, self.endpoint, True, "listening; " + self._auth_note())
        try:
            _bind_check(self.host, self.port)
        except OSError as err:
            return cannot_bind(self.name, self.endpoint, err)
        return CheckResult(self.name, self.endpoint, True, "port is free; " + self._auth_note())

    def status(self) -> dict:
        return {"ready": self.ready, "endpoint": self.endpoint,
                "auth": "loopback_only" if self.protected else "api_key"}

    # -- requests ----------------------------------------------------------------
    async def _post(self, request: web.Request) -> web.Response:
        try:
            status, body, headers = 200, await self._batch(request), None
            if body.get("accepted") == 0 and body.get("duplicates") == 0 and body.get("rejected"):
                status = 400   # nothing usable: the plugin counts the batch as failed
                body["error"] = "no valid event in the batch"
        except Reply as reply:
            status, body, headers = reply.status, reply.body, reply.headers
            if reply.pushback:   # the plugin sends it again later (and counts what it gives up on)
                self.pipeline.pushed_back(self.name, self.transport, reply.pushback)
            if reply.reason:
                self.pipeline.refused(self.name, self.transport, reply.reason)
                level = logging.WARNING if status in (401, 403) else logging.DEBUG
                self._say(level, reply.reason, "events endpoint: %d for %s: %s", status,
                          request.remote or "?", reply.body["error"])
        self._requests.add(1, self._own, (status,))
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                            headers=headers)

    async def _batch(self, request: web.Request) -> dict:
        if self._stopping:
            raise Reply(503, "shutting down", headers={"Retry-After": RETRY_AFTER_S}, pushback="stopping")
        self._authorise(request)
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in WBITS:
            raise Reply(415, f"unsupported Content-Encoding {encoding!r}: use gzip", "unsupported_encoding")
        if request.content_length is not None and request.content_length > self.max_body:
            raise Reply(413, f"body over {self.max_body} bytes", "too_large", max_body=self.max_body)
        if self.pipeline.congested():
            raise Reply(503, "export queue full, retry later", headers={"Retry-After": RETRY_AFTER_S},
                        pushback="congested")
        if self._reading >= MAX_READING:
            raise Reply(503, "too many requests at once", headers={"Retry-After": RETRY_AFTER_S}, pushback="busy")
        self._reading += 1
        try:
            async with asyncio.timeout(self.settings.read_timeout):
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Reply(413, f"body over {self.max_body} bytes", "too_large", max_body=self.max_body) from None
        except TimeoutError:
            raise Reply(408, "request body too slow", "timeout") from None
        finally:
            self._reading -= 1
        doc = _loads(self._decompress(raw, WBITS[encoding]))
        try:
            version = check_batch(doc, self.settings.max_events)
        except Invalid as err:
            if err.reason == "too_many_events":
                raise Reply(413, f"more than {self.settings.max_events} events", err.reason,
                            max_events=self.settings.max_events) from None
            raise Reply(400, "not an otel-mta.events batch (v1 or v2)", err.reason, detail=err.reason) from None
        result = Result()
        for _ in self.ingest.steps(doc["source"], doc["events"], result, SLICE, version):
            await asyncio.sleep(0)   # let the other sources and timers run between slices
        self.ingest.count(result)
        return result.body()

    def _authorise(self, request: web.Request) -> None:
        if self._key is not None:
            given = request.headers.get("X-Api-Key", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(hashlib.sha256(given).digest(), self._key):
                raise Reply(401, "missing or wrong X-Api-Key", "unauthorized")
        elif not _loopback(request.remote):
            raise Reply(403, "no API key is configured: only loopback clients are served", "forbidden")

    def _decompress(self, raw: bytes, wbits: int | None) -> bytes:
        if wbits is None:
            return raw
        d = zlib.decompressobj(wbits)
        try:
            data = d.decompress(raw, self.max_body)
        except zlib.error:
            raise Reply(400, "body is not valid gzip/deflate data", "bad_encoding") from None
        if not d.eof:
            if len(data) >= self.max_body:   # a gzip bomb stops here, at max_body bytes
                raise Reply(413, f"body over {self.max_body} bytes once decompressed", "too_large",
                            max_body=self.max_body)
            raise Reply(400, "truncated gzip/deflate data", "bad_encoding")
        if d.unused_data:
            raise Reply(400, "trailing data after the compressed body", "bad_encoding")
        return data


def _loads(data: bytes):
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:   # also nesting deeper than orjson's limit
        raise Reply(400, f"body is not JSON: {err}"[:200], "bad_json") from None
