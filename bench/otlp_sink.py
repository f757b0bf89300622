"""An OTLP receiver in its own process for benchmarks: counts what arrives
and, when asked, notes when each log record arrived (for latency). gRPC (with
a message size limit if asked), or OTLP/HTTP (aiohttp) with `http=True`."""
from __future__ import annotations

import multiprocessing as mp
import time
from concurrent import futures

import grpc
import psutil
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as ls, logs_service_pb2_grpc as lsg
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms, metrics_service_pb2_grpc as msg
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts, trace_service_pb2_grpc as tsg


def _serve(port, counts, ready, stop, latency_q, track_latency, max_receive=256 << 20, http=False):
    arrivals = []

    class Logs(lsg.LogsServiceServicer):
        def Export(self, request, context):
            now = time.time()
            n = 0
            for rl in request.resource_logs:
                for sl in rl.scope_logs:
                    n += len(sl.log_records)
                    if track_latency:
                        for r in sl.log_records:
                            key = [None, None, None]
                            for kv in r.attributes:
                                if kv.key == "mta.queue_id":
                                    key[0] = kv.value.string_value
                                elif kv.key == "mta.action":
                                    key[1] = kv.value.string_value
                                elif kv.key == "mta.delivery.seq":
                                    key[2] = kv.value.string_value
                            arrivals.append((tuple(key), now))
            with counts.get_lock():
                counts[0] += n
            return ls.ExportLogsServiceResponse()

    class Traces(tsg.TraceServiceServicer):
        def Export(self, request, context):
            n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            with counts.get_lock():
                counts[1] += n
            return ts.ExportTraceServiceResponse()

    class Metrics(msg.MetricsServiceServicer):
        def Export(self, request, context):
            n = 0
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        n += len(getattr(m, m.WhichOneof("data")).data_points)
            with counts.get_lock():
                counts[2] += n
            return ms.ExportMetricsServiceResponse()

    if http:
        _serve_http(port, {"logs": (ls.ExportLogsServiceRequest, Logs()), "traces": (ts.ExportTraceServiceRequest, Traces()),
                           "metrics": (ms.ExportMetricsServiceRequest, Metrics())}, ready, stop)
        latency_q.put(arrivals)
        return
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", max_receive)])
    lsg.add_LogsServiceServicer_to_server(Logs(), server)
    tsg.add_TraceServiceServicer_to_server(Traces(), server)
    msg.add_MetricsServiceServicer_to_server(Metrics(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    ready.set()
    stop.wait()
    server.stop(0)
    latency_q.put(arrivals)


def _serve_http(port, services, ready, stop):
    """OTLP/HTTP binary protobuf on /v1/{logs,traces,metrics}, with the same counting servicers."""
    import asyncio
    import gzip
    from aiohttp import web

    async def export(request):
        cls, servicer = services[request.match_info["signal"]]
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        reply = servicer.Export(cls.FromString(body), None)
        return web.Response(body=reply.SerializeToString(), content_type="application/x-protobuf")

    async def main():
        app = web.Application(client_max_size=256 << 20)
        app.router.add_post("/v1/{signal}", export)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await runner.cleanup()

    asyncio.run(main())


class Sink:
    """Start with `Sink(port)`, read `.logs/.spans/.points`, `close()` returns arrivals."""

    def __init__(self, port: int, track_latency: bool = False, max_receive: int = 256 << 20, http: bool = False):
        ctx = mp.get_context("spawn")
        self.counts = ctx.Array("q", 3)
        self._ready, self._stop = ctx.Event(), ctx.Event()
        self._q = ctx.Queue()
        self.proc = ctx.Process(target=_serve, args=(port, self.counts, self._ready, self._stop, self._q,
                                                     track_latency, max_receive, http), daemon=True)
        self.proc.start()
        self._ready.wait(30)
        self.port = port

    def cpu_seconds(self) -> float:
        """CPU time the receiver process used so far."""
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    @property
    def logs(self) -> int:
        return self.counts[0]

    @property
    def spans(self) -> int:
        return self.counts[1]

    @property
    def points(self) -> int:
        return self.counts[2]

    def close(self) -> list:
        self._stop.set()
        arrivals = self._q.get(timeout=60)
        self.proc.join(10)
        return arrivals
