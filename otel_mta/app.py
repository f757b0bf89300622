"""Wires sources -> pipeline -> exporter, runs them on one event loop, and shuts
down cleanly: on SIGTERM/SIGINT stop receiving, flush everything, exit 0."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import psutil

from otel_mta import __version__
from otel_mta.config import Settings
from otel_mta.export.factory import build_exporter
from otel_mta.export.senders import FileSink
from otel_mta.health import HealthServer
from otel_mta.memory import RequestBuffers
from otel_mta.pipeline import Pipeline
from otel_mta.sources import enabled_sources, mail_channels
from otel_mta.status import SAMPLE_S, StatusBoard

log = logging.getLogger("otel_mta")
SHUTDOWN_BUDGET_S = 8.0   # of the 10 s Kubernetes and the issue allow
SOURCE_STOP_S = 3.0


class App:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.exporter = build_exporter(settings)
        self.pipeline = Pipeline(settings, self.exporter.submit, mail_channels(settings))
        self.pipeline.congested = self.exporter.queue.congested
        self.sources = enabled_sources(settings, self.pipeline)
        self.status = StatusBoard(self)   # GET /status on the health endpoint, for `otel-mta top`
        h = settings.health.endpoint
        self.health = HealthServer(h[0], h[1], self) if h else None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._process = psutil.Process()
        self._buffers = RequestBuffers()
        self._exported = (time.monotonic(), 0)
        self.pipeline.metrics.before_collect(self._self_metrics)
        self.pipeline.metrics.before_collect(self._export_losses)

    # -- lifecycle -------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self.exporter.start(loop)
        starting = ""
        try:
            for source in self.sources:
                starting = f"{source.name} on {source.endpoint}"
                await source.start()
            if self.health:
                starting = f"health endpoint on {self.health.endpoint}"
                await self.health.start()
        except OSError as err:
            log.error("cannot start %s: %s", starting, err.strerror or err)
            await self._shutdown()
            return 1
        self._announce()
        s = self.settings
        self._tasks = [
            asyncio.create_task(self._every(s.batch.logs_delay, self.pipeline.logs.flush)),
            asyncio.create_task(self._every(s.batch.spans_delay, self.pipeline.spans.flush)),
            asyncio.create_task(self._every(0.25, self.pipeline.tick)),
            asyncio.create_task(self._every(s.metrics.interval, self.export_metrics)),
            asyncio.create_task(self._every(60.0, self._status_line)),
            asyncio.create_task(self._every(1.0, self._tune_memory)),
            asyncio.create_task(self._every(SAMPLE_S, self.status.sample)),
        ]
        await self._stop.wait()
        log.info("stopping: no longer receiving, flushing")
        await self._shutdown()
        return 0

    def stop(self) -> None:
        self._stop.set()

    async def _shutdown(self) -> None:
        started = time.monotonic()
        for task in self._tasks:
            task.cancel()
        for source in self.sources:
            try:
                # one source that will not stop must not cost the others their flush;
                # asyncio.timeout, not wait_for, whose lost cancels (3.11) could hang here
                async with asyncio.timeout(SOURCE_STOP_S):
                    await source.stop()
            except TimeoutError:
                log.warning("stopping %s took over %.0f s; going on without it", source.name, SOURCE_STOP_S)
            except Exception:  # keep shutting the others down
                log.exception("stopping %s failed", source.name)
        self.pipeline.tick(flush_all=True)
        self.pipeline.flush()
        # logs and spans first (half the budget at most), then the last metrics:
        # taken before, they would report the final flush as a backlog and leave
        # out what it sent, and a backend keeps a stopped sidecar's last values
        # for minutes (ExportBacklog pending, a queue on the dashboards)
        await self.exporter.settle(("logs", "traces"), (SHUTDOWN_BUDGET_S - (time.monotonic() - started)) / 2)
        self.export_metrics()
        if self.health:
            await self.health.stop()
        remaining = max(1.0, SHUTDOWN_BUDGET_S - (time.monotonic() - started))
        await self.exporter.stop_async(remaining)
        st = self.exporter.stats
        lost: dict = {}
        for (_, reason), count in st.failed.items():
            lost[reason] = lost.get(reason, 0) + count
        why = ", ".join(f"{n} {reason}" for reason, n in lost.items())
        log.info("stopped: exported %d log records, %d spans, %d metric points%s", st.sent["logs"],
                 st.sent["traces"], st.sent["metrics"], f"; {sum(lost.values())} items lost ({why})" if lost else "")

    async def _every(self, interval: float, fn) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                fn()
            except Exception:
                log.exception("periodic task %s failed", getattr(fn, "__name__", fn))

    def export_metrics(self) -> None:
        collected = self.pipeline.metrics.collect()
        if collected:
            payload, points = collected
            self.exporter.submit("metrics", payload, points)

    def _tune_memory(self) -> None:
        sent = self.exporter.stats.sent
        now, total = time.monotonic(), sent["logs"] + sent["traces"]
        then, before = self._exported
        self._exported = (now, total)
        self._buffers.update((total - before) / max(now - then, 1e-3))

    # -- self-telemetry and status -----------------------------------------------
    def _self_metrics(self) -> None:
        m, own, st = self.pipeline.metrics, self.pipeline.resources.own, self.exporter.stats
        name = self.exporter.name
        for signal_name, metric in (("logs", "log_records"), ("traces", "spans"), ("metrics", "metric_points")):
            m.counter(f"otelmta_exporter_sent_{metric}").observe(st.sent[signal_name], own, (name,))
            failed = m.counter(f"otelmta_exporter_send_failed_{metric}")
            for (sig, reason), count in list(st.failed.items()):
                if sig == signal_name:
                    failed.observe(count, own, (name, reason))
        m.counter("otelmta_exporter_retries").observe(st.retries, own, (name,))
        m.counter("otelmta_exporter_request_splits").observe(st.splits, own, (name,))
        q = self.exporter.queue
        m.gauge("otelmta_exporter_queue_size").set(q.bytes, own, (name,))
        m.gauge("otelmta_exporter_queue_capacity").set(q.max_bytes, own, (name,))
        if q.spool is not None:
            m.gauge("otelmta_exporter_spool_size").set(q.spool.size, own, (name,))
        cpu = self._process.cpu_times()
        cpu_counter = m.counter("otelmta_process_cpu_time")
        cpu_counter.observe(cpu.user, own, ("user",))
        cpu_counter.observe(cpu.system, own, ("system",))
        m.gauge("otelmta_process_memory_rss").set(self._process.memory_info().rss, own)

    def _export_losses(self) -> None:
        """Losses the exporter's parts count but _self_metrics does not export
        (read from the objects as they are): spool segments with a torn tail."""
        spool = getattr(self.exporter.queue, "spool", None)
        if spool is not None:
            self.pipeline.metrics.counter("otelmta_exporter_spool_corrupt").observe(
                getattr(spool, "corrupt", 0), self.pipeline.resources.own, (self.exporter.name,))

    def readiness(self) -> tuple[bool, dict]:
        sources = {s.name: s.status() for s in self.sources}
        exporter = {"name": self.exporter.name, "endpoint": self.exporter.sender.endpoint,
                    "healthy": self.exporter.healthy, "last_error": self.exporter.stats.last_error}
        ready = all(s["ready"] for s in sources.values())
        return ready, {"sources": sources, "exporter": exporter}

    def trace_id_for_queue_id(self, queue_id: str) -> tuple[bytes, bool] | None:
        """(trace id, whether it comes from the message's Message-ID) of a
        ZoneMTA queue id or Haraka transaction uuid the correlation index knows
        (learned from its QUEUED entry or Haraka's transaction), else None."""
        return self.pipeline.correlator.lookup(queue_id)

    def _announce(self) -> None:
        parts = [f"{s.name} on {s.endpoint}" for s in self.sources] or ["no sources enabled"]
        if self.health:
            parts.append(f"health on {self.health.endpoint}/readyz")
        log.info("otel-mta %s started (pid %d): %s", __version__, os.getpid(), "; ".join(parts))
        sender = self.exporter.sender
        if isinstance(sender, FileSink):
            log.info("no OTEL_EXPORTER_OTLP_ENDPOINT set: writing OTLP JSON to %s/{logs,traces,metrics}.jsonl",
                     sender.dir.resolve())
        else:
            log.info("exporting OTLP (%s) to %s", self.settings.exporter.protocol, sender.endpoint)

    def _status_line(self) -> None:
        m = self.pipeline.metrics
        acc = sum(m.counter("otelmta_receiver_accepted_records").series.values())
        ref = sum(m.counter("otelmta_receiver_refused_records").series.values())
        st = self.exporter.stats
        state = "ok" if self.exporter.healthy else f"FAILING ({st.last_error})"
        log.info("received %d records (%d refused); exported %d logs, %d spans, %d points; "
                 "queue %d KiB; collector %s", acc, ref, st.sent["logs"], st.sent["traces"],
                 st.sent["metrics"], self.exporter.queue.bytes // 1024, state)
