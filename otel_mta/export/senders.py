"""Where export requests go: OTLP/gRPC, OTLP/HTTP, or OTLP JSON files.

Requests arrive as finished protobuf bytes (ExportLogsServiceRequest, ...), so
the gRPC and HTTP senders only move bytes; the file sink turns them into the
Collector file exporter's JSON.
"""
from __future__ import annotations

import base64
import gzip
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import orjson
import urllib3
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

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
# OTLP spec: retry these; anything else is permanent
RETRYABLE_GRPC = {grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
                  grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
                  grpc.StatusCode.RESOURCE_EXHAUSTED}
RETRYABLE_HTTP = {429, 502, 503, 504}


@dataclass
class Result:
    ok: bool
    retryable: bool = False
    rejected: int = 0       # items the receiver refused in a partial success
    error: str = ""
    retry_after: float | None = None


def _partial(signal: str, body: bytes) -> int:
    if not body:
        return 0
    cls, field = RESPONSES[signal]
    try:
        return getattr(cls.FromString(body).partial_success, field)
    except Exception:  # a receiver that answers something else: treat as success
        return 0


class GrpcSender:
    """OTLP/gRPC. The sidecar's exporter uses `send_async` (grpc.aio, on its
    event loop: see export/exporter.py); `send` blocks (otel-mta check)."""

    name = "otlp_grpc"

    def __init__(self, endpoint: str, headers: dict, timeout_s: float, insecure: bool | None = None,
                 compression: str = "none", certificate: str | None = None):
        parts = urlsplit(endpoint if "://" in endpoint else "//" + endpoint)
        self._target = parts.netloc or endpoint
        if insecure is None:
            insecure = parts.scheme != "https"
        self._options = [("grpc.max_send_message_length", 64 << 20), ("grpc.enable_retries", 0)]
        self._credentials = None
        if not insecure:
            root = Path(certificate).read_bytes() if certificate else None
            self._credentials = grpc.ssl_channel_credentials(root)
        self._metadata = tuple((k.lower(), v) for k, v in headers.items())
        self._timeout = timeout_s
        self._compression = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
        self.endpoint = self._target
        self._sync = None   # (channel, calls), made on first use
        self._aio = None    # the same for grpc.aio, made on the event loop that uses it

    def _open(self, api) -> tuple:
        if self._credentials is None:
            channel = api.insecure_channel(self._target, options=self._options)
        else:
            channel = api.secure_channel(self._target, self._credentials, options=self._options)
        return channel, {s: channel.unary_unary(m) for s, m in GRPC_METHODS.items()}

    def _kwargs(self) -> dict:
        return {"timeout": self._timeout, "metadata": self._metadata, "compression": self._compression}

    @staticmethod
    def _failed(err: grpc.RpcError) -> Result:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = err.details() if hasattr(err, "details") else err
        return Result(False, code in RETRYABLE_GRPC, error=f"{code.name}: {details}")

    def send(self, signal: str, payload: bytes) -> Result:
        if self._sync is None:
            self._sync = self._open(grpc)
        try:
            body = self._sync[1][signal](payload, **self._kwargs())
        except grpc.RpcError as err:
            return self._failed(err)
        return Result(True, rejected=_partial(signal, body))

    async def send_async(self, signal: str, payload: bytes) -> Result:
        if self._aio is None:
            self._aio = self._open(grpc.aio)
        try:
            body = await self._aio[1][signal](payload, **self._kwargs())
        except grpc.RpcError as err:
            return self._failed(err)
        return Result(True, rejected=_partial(signal, body))

    async def aclose(self) -> None:
        if self._aio is not None:
            channel, self._aio = self._aio[0], None
            await channel.close()

    def close(self) -> None:
        if self._sync is not None:
            channel, self._sync = self._sync[0], None
            channel.close()


class HttpSender:
    name = "otlp_http"

    def __init__(self, endpoint: str, headers: dict, timeout_s: float, compression: str = "none",
                 signal_endpoints: dict | None = None, certificate: str | None = None):
        base = endpoint.rstrip("/")
        self._urls = {s: (signal_endpoints or {}).get(s) or f"{base}/v1/{s}" for s in REQUESTS}
        self._headers = {"Content-Type": "application/x-protobuf", **headers}
        self._gzip = compression == "gzip"
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        kwargs = {"ca_certs": certificate} if certificate else {}
        self._http = urllib3.PoolManager(num_pools=2, maxsize=2, retries=False,
                                         timeout=urllib3.Timeout(total=timeout_s), **kwargs)
        self.endpoint = base

    def send(self, signal: str, payload: bytes) -> Result:
        if self._gzip:
            payload = gzip.compress(payload, 5)
        try:
            resp = self._http.request("POST", self._urls[signal], body=payload, headers=self._headers)
        except urllib3.exceptions.HTTPError as err:
            return Result(False, True, error=f"{type(err).__name__}: {err}")
        if 200 <= resp.status < 300:
            return Result(True, rejected=_partial(signal, resp.data))
        retry_after = None
        if resp.headers.get("Retry-After", "").isdigit():
            retry_after = float(resp.headers["Retry-After"])
        return Result(False, resp.status in RETRYABLE_HTTP, error=f"HTTP {resp.status}",
                      retry_after=retry_after)

    def close(self) -> None:
        self._http.clear()


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
