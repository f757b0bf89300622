"""What the pollers of a Prometheus `/metrics` endpoint share (ZoneMTA's API,
WildDuck's metrics listener): a bounded HTTP GET whose failures are PollErrors,
the text parsed by prometheus_client, and the start time of the target's
counters.

Imported only by the pollers that use it, so aiohttp and prometheus_client
are loaded only when one of them is on.
"""
from __future__ import annotations

import errno
import math
import time
from urllib.parse import urlsplit

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from otel_mta.sources.poller import PollError, StartTimes

MAX_BODY = 4 << 20   # bytes read from any one response


def number(value: float):
    """Prometheus values are floats; counts go out as integers."""
    if math.isfinite(value) and value == int(value):
        return int(value)
    return value


class HttpGetter:
    """GETs under one base URL, each bounded in time (the poller's timeout)
    and size; every failure is a PollError with a short reason."""

    def __init__(self, base: str, timeout: float):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.base_path = urlsplit(self.base).path or "/"
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=min(self.timeout, 5.0)),
                raise_for_status=False)
        return self._session

    async def get(self, path: str = "") -> bytes:
        """The body of GET <base><path>."""
        what = path or self.base_path
        try:
            async with self._client().get(self.base + path, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise PollError(f"http_{resp.status}", f"GET {what}: HTTP {resp.status}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > MAX_BODY:
                        break
        except aiohttp.ClientConnectorError as err:
            if getattr(err.os_error, "errno", None) == errno.ECONNREFUSED:
                raise PollError("refused", "connection refused") from None
            raise PollError("network", f"cannot connect: {err.os_error.strerror or err.os_error}") from None
        except aiohttp.ClientError as err:
            raise PollError("network", f"GET {what}: {type(err).__name__}: {err}") from None
        if len(body) > MAX_BODY:
            raise PollError("bad_response", f"GET {what}: answer larger than {MAX_BODY >> 20} MiB")
        return bytes(body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def parse(body: bytes, what: str) -> list:
    """The metric families of a Prometheus text exposition."""
    try:
        return list(text_string_to_metric_families(body.decode("utf-8", "replace")))
    except Exception as err:  # the parser raises ValueError and friends on garbage
        raise PollError("bad_response", f"GET {what}: not Prometheus text ({err})") from None


def process_start_ns(families: list, now_ns: int) -> int | None:
    """prom-client's process_start_time_seconds, when it is there and sane."""
    for family in families:
        if family.name == "process_start_time_seconds" and family.samples:
            v = family.samples[0].value
            if math.isfinite(v) and 0 < v * 1e9 <= now_ns:
                return int(v * 1e9)
    return None


def samples(family, suffix: str = ""):
    """The family's finite samples named <family><suffix> (for counters the
    parser names them <family>_total whether or not the target did)."""
    names = {family.name + suffix}
    if family.type == "counter" and not suffix:
        names.add(family.name + "_total")
    for sample in family.samples:
        if sample.name in names and math.isfinite(sample.value):
            yield sample


class CounterStart:
    """When a target's counters started: its process start when it reports
    one, else when first seen; totals going down mean it restarted."""

    def __init__(self, key: str):
        self.key = key
        self._starts = StartTimes()
        self._first_seen_ns: int | None = None
        self._last_totals: dict = {}

    def __call__(self, process_start: int | None, totals: dict, now_ns: int | None = None) -> int:
        now_ns = now_ns or time.time_ns()
        last, self._last_totals = self._last_totals, totals
        if process_start is not None:
            return self._starts.get(self.key, process_start)
        if self._first_seen_ns is None:
            self._first_seen_ns = now_ns
            return self._starts.reset(self.key, now_ns)
        if any(v < last.get(k, 0) for k, v in totals.items()):
            return self._starts.reset(self.key, now_ns)
        return self._starts.get(self.key, self._first_seen_ns)
