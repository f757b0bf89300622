"""A real OTLP receiver for tests: gRPC (grpcio server with the generated
opentelemetry-proto services) and HTTP (aiohttp-free, stdlib http.server) in the
test process. It keeps every request it accepted, and can be told to fail,
to ask for a delay (Retry-After, RetryInfo) or to refuse requests over a size
(gRPC: the server's own grpc.max_receive_message_length; HTTP: 413 as nginx's
client_max_body_size answers).
"""
from __future__ import annotations

import gzip
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from tests import emitted
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as ls, logs_service_pb2_grpc as lsg
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms, metrics_service_pb2_grpc as msg
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts, trace_service_pb2_grpc as tsg

REQUEST = {"logs": ls.ExportLogsServiceRequest, "traces": ts.ExportTraceServiceRequest,
           "metrics": ms.ExportMetricsServiceRequest}
RESPONSE = {"logs": ls.ExportLogsServiceResponse, "traces": ts.ExportTraceServiceResponse,
            "metrics": ms.ExportMetricsServiceResponse}


class Received:
    """Everything a receiver accepted, flattened for assertions."""

    def __init__(self):
        self.requests = {"logs": [], "traces": [], "metrics": []}
        self.lock = threading.Lock()
        self.fail_with: grpc.StatusCode | int | None = None   # answer errors while set
        self.fail_signals: set | None = None   # only for these signals (None: all)
        self.fail_calls: dict | None = None    # {signal: times} still to fail (None: until cleared)
        self.calls = 0
        self.delay_s = 0.0
        self.retry_after: float | None = None   # with fail_with: Retry-After (HTTP) / RetryInfo (gRPC)
        self.max_body: int | None = None        # HTTP: answer 413 to larger bodies
        self.too_large = 0                      # requests refused for their size

    def should_fail(self, signal: str, kind) -> bool:
        with self.lock:
            if not isinstance(self.fail_with, kind):
                return False
            if self.fail_signals is not None and signal not in self.fail_signals:
                return False
            if self.fail_calls is not None:
                if self.fail_calls.get(signal, 0) <= 0:
                    return False
                self.fail_calls[signal] -= 1
            return True

    def add(self, signal: str, request) -> None:
        emitted.record(signal, request)
        with self.lock:
            self.requests[signal].append((time.time(), request))

    # -- flattened views ------------------------------------------------------
    def log_records(self):
        """[(resource attrs dict, LogRecord)]"""
        out = []
        for _, req in list(self.requests["logs"]):
            for rl in req.resource_logs:
                res = attrs(rl.resource.attributes)
                for sl in rl.scope_logs:
                    out.extend((res, r) for r in sl.log_records)
        return out

    def spans(self):
        out = []
        for _, req in list(self.requests["traces"]):
            for rs in req.resource_spans:
                res = attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    out.extend((res, s) for s in ss.spans)
        return out

    def metrics(self):
        """{metric name: [(resource attrs, Metric)]} over every request."""
        out: dict = {}
        for _, req in list(self.requests["metrics"]):
            for rm in req.resource_metrics:
                res = attrs(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        out.setdefault(m.name, []).append((res, m))
        return out

    def last_points(self, name: str):
        """Data points of the newest export of metric `name`: [(attrs dict, point)]."""
        # the newest request holding this metric
        for _, req in reversed(list(self.requests["metrics"])):
            points = []
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name == name:
                            data = getattr(m, m.WhichOneof("data"))
                            points.extend((attrs(p.attributes), p) for p in data.data_points)
            if points:
                return points
        return []

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "data"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate(self)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    v = getattr(any_value, kind)
    if kind == "array_value":
        return [value_of(x) for x in v.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.values}
    return v


def attrs(kvs) -> dict:
    return {kv.key: value_of(kv.value) for kv in kvs}


def _servicer(base, signal: str, received: Received):
    class Servicer(base):
        def Export(self, request, context):
            received.calls += 1
            if received.delay_s:
                time.sleep(received.delay_s)
            if received.should_fail(signal, grpc.StatusCode):
                if received.retry_after is not None:
                    context.set_trailing_metadata([("grpc-status-details-bin", retry_info(
                        received.fail_with, received.retry_after))])
                context.abort(received.fail_with, "told to fail")
            received.add(signal, request)
            return RESPONSE[signal]()
    return Servicer()


def retry_info(code: grpc.StatusCode, delay_s: float) -> bytes:
    """A google.rpc.Status holding a RetryInfo, as a server puts it in `grpc-status-details-bin`."""
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
        seconds=int(delay_s), nanos=int(delay_s % 1 * 1e9)))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message="told to fail")
    status.details.add().Pack(info)
    return status.SerializeToString()


class GrpcReceiver:
    def __init__(self, port: int = 0, max_receive: int = 64 << 20):
        self.received = Received()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                  options=[("grpc.max_receive_message_length", max_receive)])
        lsg.add_LogsServiceServicer_to_server(_servicer(lsg.LogsServiceServicer, "logs", self.received), self.server)
        tsg.add_TraceServiceServicer_to_server(_servicer(tsg.TraceServiceServicer, "traces", self.received), self.server)
        msg.add_MetricsServiceServicer_to_server(_servicer(msg.MetricsServiceServicer, "metrics", self.received), self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(0)


class HttpReceiver:
    def __init__(self, port: int = 0):
        received = self.received = Received()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                received.calls += 1
                signal = self.path.rsplit("/", 1)[-1]
                length = int(self.headers.get("Content-Length", 0))
                if received.max_body is not None and length > received.max_body:
                    with received.lock:
                        received.too_large += 1
                    self.rfile.read(length)  # nginx reads what comes before it closes (lingering close)
                    self.send_response(413)
                    self.send_header("Connection", "close")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self.close_connection = True
                    return
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if signal not in REQUEST or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(400)
                    self.end_headers()
                    return
                if received.should_fail(signal, int):
                    self.send_response(received.fail_with)
                    if received.retry_after is not None:
                        self.send_header("Retry-After", str(int(received.retry_after)))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                received.add(signal, REQUEST[signal].FromString(body))
                out = RESPONSE[signal]().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
