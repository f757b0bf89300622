"""Where export requests go: OTLP/gRPC, OTLP/HTTP, or OTLP JSON files.

Requests arrive as finished protobuf bytes (ExportLogsServiceRequest, ...), so
the gRPC and HTTP senders only move bytes; the file sink turns them into the
Collector file exporter's JSON. Each sender has `send_async`, run on the
exporter's event loop (gRPC with grpc.aio, HTTP with aiohttp's client), and
says what an answer means by the OTLP specification's rules: retry only what
is retryable, after the delay the receiver asked for; a request refused for
its size is split by the exporter; anything else is permanent.
"""
from __future__ import annotations

import asyncio
import base64
import email.utils
import gzip
import json
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import grpc
import orjson
from google.protobuf.json_format import MessageToDict
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otel_mta import __version__

REQUESTS = {
    "logs": logs_service_pb2.ExportLogsServiceRequest,
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
}
RESPONSES = {
    "logs": (logs_service_pb2.ExportLogsServiceResponse, "rejected_log_records"),
    "traces": (trace_service_pb2.ExportTraceServiceResponse, "rejected_spans"),
    "metrics": (metrics_service_pb2.ExportMetricsServiceResponse, "rejected_data_points"),
}
GRPC_METHODS = {
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}
# OTLP spec: retry these; RESOURCE_EXHAUSTED only when the server sent RetryInfo;
# anything else is permanent
RETRYABLE_GRPC = {grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
                  grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS}
RETRYABLE_HTTP = {429, 502, 503, 504}
MAX_RETRY_DELAY_S = 300.0   # a receiver's Retry-After / RetryInfo beyond this is taken as 5 minutes
USER_AGENT = f"otel-mta/{__version__}"   # OTLP spec: exporters name themselves
WINDOW = 4   # requests in flight at once per signal while the receiver answers


@dataclass
class Result:
    ok: bool
    retryable: bool = False
    rejected: int = 0       # items the receiver refused in a partial success
    error: str = ""
    retry_after: float | None = None   # seconds the receiver asked us to wait
    too_large: bool = False  # refused for its size: split it (HTTP 413, gRPC RESOURCE_EXHAUSTED)


def _partial(signal: str, body: bytes) -> int:
    if not body:
        return 0
    cls, field = RESPONSES[signal]
    try:
        return getattr(cls.FromString(body).partial_success, field)
    except Exception:  # a receiver that answers something else: treat as success
        return 0


def _delay(seconds: float) -> float:
    return min(max(0.0, seconds), MAX_RETRY_DELAY_S)


def grpc_retry_delay(trailing_metadata) -> float | None:
    """The delay of a google.rpc.RetryInfo in `grpc-status-details-bin`, if the server sent one."""
    for key, value in trailing_metadata or ():
        if key != "grpc-status-details-bin":
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return _delay(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def http_retry_delay(value: str | None, now: float | None = None) -> float | None:
    """Retry-After: delay-seconds or an HTTP-date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return _delay(float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return _delay(when.timestamp() - (time.time() if now is None else now))


def _http_status_message(body: bytes) -> str:
    """OTLP/HTTP error bodies are a google.rpc.Status; show its message."""
    try:
        return status_pb2.Status.FromString(body).message[:200]
    except Exception:
        return ""


class GrpcSender:
    """OTLP/gRPC with grpc.aio, on the exporter's event loop (see export/exporter.py)."""

    name = "otlp_grpc"
    window = WINDOW

    def __init__(self, endpoint: str, headers: dict, timeout_s: float, insecure: bool | None = None,
                 compression: str = "none", certificate: str | None = None):
        parts = urlsplit(endpoint if "://" in endpoint else "//" + endpoint)
        self._target = parts.netloc or endpoint
        if insecure is None:
            insecure = parts.scheme != "https"
        # the exporter retries (its own backoff); the channel's reconnect backoff
        # grows to 2 minutes by default, which would delay the recovery after an outage
        self._options = [("grpc.max_send_message_length", 64 << 20), ("grpc.enable_retries", 0),
                         ("grpc.max_reconnect_backoff_ms", 5000), ("grpc.primary_user_agent", USER_AGENT)]
        self._credentials = None
        if not insecure:
            root = Path(certificate).read_bytes() if certificate else None
            self._credentials = grpc.ssl_channel_credentials(root)
        self._metadata = tuple((k.lower(), v) for k, v in headers.items())
        self._timeout = timeout_s
        self._compression = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
        self.endpoint = self._target
        self._aio = None    # (channel, calls), made on the event loop that uses it

    def _open(self) -> tuple:
        if self._credentials is None:
            channel = grpc.aio.insecure_channel(self._target, options=self._options)
        else:
            channel = grpc.aio.secure_channel(self._target, self._credentials, options=self._options)
        return channel, {s: channel.unary_unary(m) for s, m in GRPC_METHODS.items()}

    @staticmethod
    def _failed(err: grpc.RpcError) -> Result:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = err.details() if hasattr(err, "details") else err
        error = f"{code.name}: {details}"
        delay = grpc_retry_delay(err.trailing_metadata() if hasattr(err, "trailing_metadata") else None)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            # with RetryInfo the server is busy: wait and retry; without, the
            # spec makes it permanent, and a server's size limit answers it
            # ("Received message larger than max"): split the request
            return Result(False, True, error=error, retry_after=delay) if delay is not None else \
                Result(False, error=error, too_large=True)
        return Result(False, code in RETRYABLE_GRPC, error=error, retry_after=delay)

    async def send_async(self, signal: str, payload: bytes) -> Result:
        if self._aio is None:
            self._aio = self._open()
        try:
            body = await self._aio[1][signal](payload, timeout=self._timeout, metadata=self._metadata,
                                              compression=self._compression)
        except grpc.RpcError as err:
            return self._failed(err)
        return Result(True, rejected=_partial(signal, body))

    async def aclose(self) -> None:
        if self._aio is not None:
            channel, self._aio = self._aio[0], None
            await channel.close()

    def close(self) -> None:
        pass


class HttpSender:
    """OTLP/HTTP (binary protobuf) with aiohttp's client, on the exporter's event loop."""

    name = "otlp_http"
    window = WINDOW

    def __init__(self, endpoint: str, headers: dict, timeout_s: float, compression: str = "none",
                 signal_endpoints: dict | None = None, certificate: str | None = None):
        base = endpoint.rstrip("/")
        self._urls = {s: (signal_endpoints or {}).get(s) or f"{base}/v1/{s}" for s in REQUESTS}
        self._headers = {"Content-Type": "application/x-protobuf", "User-Agent": USER_AGENT, **headers}
        self._gzip = compression == "gzip"
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._certificate = certificate
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None   # made on the event loop that uses it
        self.endpoint = base

    def _open(self) -> aiohttp.ClientSession:
        ssl_ctx = ssl.create_default_context(cafile=self._certificate) if self._certificate else None
        connector = aiohttp.TCPConnector(limit=3 * WINDOW, ssl=ssl_ctx if ssl_ctx else True)
        # no cookies; proxies from the environment only if asked (trust_env is off by default)
        return aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                     cookie_jar=aiohttp.DummyCookieJar())

    async def send_async(self, signal: str, payload: bytes) -> Result:
        if self._session is None:
            self._session = self._open()
        if self._gzip:  # zlib lets go of the GIL: compress beside the loop, not on it
            payload = await asyncio.get_running_loop().run_in_executor(None, gzip.compress, payload, 5)
        try:
            async with self._session.post(self._urls[signal], data=payload, headers=self._headers) as resp:
                body = await resp.read()
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except aiohttp.ClientConnectorError as err:
            why = os.strerror(err.os_error.errno) if err.os_error.errno else str(err.os_error)
            return Result(False, True, error=f"cannot connect to {err.host}:{err.port}: {why}")
        except asyncio.TimeoutError:
            return Result(False, True, error=f"no answer within {self._timeout.total:g} s")
        except (aiohttp.ClientError, OSError) as err:
            return Result(False, True, error=f"{type(err).__name__}: {err}".rstrip(": "))
        if 200 <= status < 300:
            return Result(True, rejected=_partial(signal, body))
        message = _http_status_message(body)
        error = f"HTTP {status}" + (f": {message}" if message else "")
        if status == 413:
            return Result(False, error=error, too_large=True)
        return Result(False, status in RETRYABLE_HTTP, error=error, retry_after=http_retry_delay(retry_after))

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def close(self) -> None:
        pass


_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node) -> None:
    """OTLP/JSON writes trace and span ids as hex, protobuf JSON as base64."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            elif isinstance(value, (dict, list)):
                _hex_ids(value)
    elif isinstance(node, list):
        for value in node:
            _hex_ids(value)


def to_otlp_json(signal: str, payload: bytes) -> dict:
    message = REQUESTS[signal].FromString(payload)
    doc = MessageToDict(message, use_integers_for_enums=True)
    _hex_ids(doc)
    return doc


class FileSink:
    """OTLP JSON lines, one request per line, as the Collector's file exporter
    writes them: <dir>/{logs,traces,metrics}.jsonl, rotated by size."""

    name = "file"
    window = 1   # one writer per file, in order

    def __init__(self, directory: Path, max_bytes: int = 100 << 20, backups: int = 5):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.backups = backups
        self.endpoint = str(self.dir)

    def path(self, signal: str) -> Path:
        return self.dir / f"{signal}.jsonl"

    def send(self, signal: str, payload: bytes) -> Result:
        line = orjson.dumps(to_otlp_json(signal, payload)) + b"\n"
        path = self.path(signal)
        try:
            if path.exists() and path.stat().st_size + len(line) > self.max_bytes:
                self._rotate(signal, path)
            with open(path, "ab") as f:
                f.write(line)
        except OSError as err:
            return Result(False, True, error=f"{err.strerror}: {err.filename}")
        return Result(True)

    async def send_async(self, signal: str, payload: bytes) -> Result:
        return await asyncio.get_running_loop().run_in_executor(None, self.send, signal, payload)

    async def aclose(self) -> None:
        pass

    def _rotate(self, signal: str, path: Path) -> None:
        stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime()) + f".{time.time_ns() // 1_000_000 % 1000:03d}"
        os.replace(path, self.dir / f"{signal}-{stamp}.jsonl")
        old = sorted(self.dir.glob(f"{signal}-*.jsonl"))
        for stale in old[: max(0, len(old) - self.backups)]:
            stale.unlink(missing_ok=True)

    def close(self) -> None:
        pass


def read_jsonl(path: Path) -> list[dict]:
    """Read back a file the sink wrote (one OTLP JSON request per line)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
