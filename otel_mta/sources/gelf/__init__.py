"""GELF server: what WildDuck, ZoneMTA (through the npm `gelf` package), Haraka
and any Graylog client send, as OpenTelemetry log records (docs/gelf.md).

    (sources/udp.py reads the datagrams: plain, zlib, gzip, chunked (chunks.py))
    tcp.py      NUL-delimited frames on the same port
    http.py     POST /gelf (optional, OTEL_MTA_GELF_HTTP_ENDPOINT)
    decode.py   magic bytes, bounded inflate, JSON -> dict
    mapping.py  dict -> LogLine: severity, attributes, producer, trace id

Every refusal is counted in otelmta_receiver_refused_records{receiver="gelf",
reason}; chunk sets that never complete in otelmta_receiver_dropped_records;
chunks sent twice in otelmta_receiver_deduplicated_records; HTTP requests
answered 503 in otelmta_receiver_pushed_back_requests.
"""
from __future__ import annotations

import asyncio
import logging
import time

from otel_mta.pipeline import RateLimitedLog
from otel_mta.sources.base import CheckResult, Source, cannot_bind
from otel_mta.sources.gelf.chunks import Reassembler
from otel_mta.sources.gelf.decode import GelfError, decode, parse_json
from otel_mta.sources.gelf.http import HttpListener
from otel_mta.sources.gelf.mapping import CACHED, GelfMapper
from otel_mta.sources.gelf.tcp import TcpListener, bind_tcp
from otel_mta.sources.udp import UdpListener, bind_udp

log = logging.getLogger("otel_mta.gelf")
NAME = "gelf"


class GelfSource(Source):
    name = NAME
    transport = "udp+tcp"

    def __init__(self, pipeline, settings):
        super().__init__(pipeline)
        self.settings = s = settings
        self.host, self.port = s.endpoint
        self.max_size = s.max_message_size
        self._say = RateLimitedLog(log)
        self.mapper = GelfMapper(pipeline, s)
        self.chunks = Reassembler(s.chunk_timeout, s.max_chunk_sets, s.max_chunk_bytes, on_drop=self._chunk_dropped)
        self.udp = UdpListener(self.host, self.port, s.receive_buffer, self.handle_datagram, self._say, "GELF UDP",
                               queue_size=s.queue_size)
        self.tcp = None
        self.http = None
        self._timer = None
        self._emit = pipeline.emit_log_line
        self._counts = {"udp": 0, "tcp": 0, "http": 0}   # accepted, added to the metric before export
        pipeline.metrics.before_collect(self._count_drops)
        pipeline.metrics.before_collect(self.flush_counts)
        hosts = pipeline.metrics.counter("otelmta_gelf_hosts_over_limit")
        pipeline.metrics.before_collect(lambda: hosts.observe(self.mapper.hosts_overflowed, pipeline.resources.own))

    @property
    def endpoint(self) -> str:
        ep = f"udp+tcp://{self.host}:{self.port}"
        if self.http is not None:
            ep += f", http://{self.http.host}:{self.http.port}/gelf"
        return ep

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        for attempt in range(20):
            self.udp.port = self.port
            self.udp.start()
            self.tcp = TcpListener(self.host, self.udp.port, self.handle_frame, self._refuse_tcp,
                                   s.tcp_max_connections, self.max_size, s.tcp_idle_timeout,
                                   congested=self._congested)
            try:
                await self.tcp.start()
                break
            except OSError:
                self.udp.stop()
                # port 0: UDP picked a port whose TCP twin is taken; pick again
                if self.port != 0 or attempt == 19:
                    raise
        self.port = self.udp.port
        try:
            if s.http_endpoint:
                self.http = HttpListener(s.http_endpoint[0], s.http_endpoint[1], self.handle_http, self.max_size,
                                         congested=self._congested,
                                         pushed_back=lambda: self.pipeline.pushed_back(NAME, "http", "congested"))
                await self.http.start()
        except OSError:
            self.udp.stop()
            await self.tcp.stop()
            raise
        self._tick()
        self.ready = True

    def _tick(self) -> None:
        """Once a second: expire chunk sets, close idle TCP connections."""
        self.chunks.expire(time.monotonic_ns())
        if self.tcp is not None:
            self.tcp.close_idle()
        self._timer = asyncio.get_running_loop().call_later(1.0, self._tick)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.udp.stop()
        if self.tcp is not None:
            await self.tcp.stop()
        if self.http is not None:
            await self.http.stop()
        self.chunks.clear()
        self._count_drops()
        self.flush_counts()
        self.ready = False

    async def check(self) -> CheckResult:
        if self.ready:
            return CheckResult(self.name, self.endpoint, True, "listening")
        try:
            sock = bind_udp(self.host, self.port, 0)
        except OSError as err:
            return cannot_bind(self.name, self.endpoint, err, " UDP")
        try:
            bind_tcp(self.host, sock.getsockname()[1]).close()
        except OSError as err:
            return cannot_bind(self.name, self.endpoint, err, " TCP")
        finally:
            sock.close()
        return CheckResult(self.name, self.endpoint, True,
                           "port is free; WildDuck/ZoneMTA: log.gelf = {enabled: true, options: "
                           "{graylogHostname, graylogPort: %d}}" % self.port)

    def status(self) -> dict:
        return {**super().status(), "chunk_sets_pending": len(self.chunks),
                "tcp_connections": len(self.tcp.connections) if self.tcp else 0,
                "tcp_paused": bool(self.tcp and self.tcp.paused)}

    # -- input -------------------------------------------------------------------
    def handle_datagram(self, data: bytes, peer=None) -> None:
        p = self.pipeline
        try:
            if data[:1] == b"{" and len(data) <= self.max_size:   # plain JSON: the common case, no detours
                msg = parse_json(data)
            elif len(data) > 1 and data[0] == 0x1E and data[1] == 0x0F:
                done = self.chunks.add(data, peer, time.monotonic_ns())
                if done is None:
                    return
                payload, kind = done
                msg = decode(payload, self.max_size)
                self.chunks.confirm(peer, kind)
            elif not data:
                raise GelfError("empty")
            else:
                msg = decode(data, self.max_size)
            self._emit(self.mapper.map(msg, time.time_ns()), CACHED)
        except GelfError as err:
            self._refused("udp", err, peer, len(data))
            return
        except Exception:  # a mapping bug must not take the listener down
            p.refused(NAME, "udp", "internal_error")
            self._say(logging.ERROR, "internal_error", "could not map a GELF message (please report this)",
                      exc_info=True)
            return
        self._counts["udp"] += 1

    def handle_frame(self, data: bytes, peer=None) -> None:
        self._handle_whole(data, peer, "tcp")

    def handle_http(self, body, peer=None) -> str | None:
        if body is None:
            self.pipeline.refused(NAME, "http", "too_large")
            return "too_large"
        return self._handle_whole(body, peer, "http")

    def _handle_whole(self, data: bytes, peer, transport: str) -> str | None:
        p = self.pipeline
        try:
            if len(data) > 1 and data[0] == 0x1E and data[1] == 0x0F:
                raise GelfError("chunk_not_on_udp")
            if not data:
                raise GelfError("empty")
            msg = decode(data, self.max_size)
            self._emit(self.mapper.map(msg, time.time_ns()), CACHED)
        except GelfError as err:
            self._refused(transport, err, peer, len(data))
            return err.reason
        except Exception:
            p.refused(NAME, transport, "internal_error")
            self._say(logging.ERROR, "internal_error", "could not map a GELF message (please report this)",
                      exc_info=True)
            return "internal_error"
        self._counts[transport] += 1
        return None

    def flush_counts(self) -> None:
        """Accepted messages are counted here and added to the metric in bulk:
        a metric update per datagram costs more than decoding it."""
        for transport, n in self._counts.items():
            if n:
                self.pipeline.accepted(NAME, transport, n)
                self._counts[transport] = 0

    def _refused(self, transport: str, err: GelfError, peer, size: int) -> None:
        self.pipeline.refused(NAME, transport, err.reason)
        self._say(logging.DEBUG, err.reason, "refused a %d-byte GELF %s message from %s: %s",
                  size, transport, peer[0] if isinstance(peer, tuple) else peer or "?", err)

    def _congested(self) -> bool:
        # looked up at each call: the app points pipeline.congested at the export queue after we are built
        return self.pipeline.congested()

    def _refuse_tcp(self, reason: str) -> None:
        self.pipeline.refused(NAME, "tcp", reason)

    def _chunk_dropped(self, reason: str, n: int = 1) -> None:
        if reason == "duplicate_chunk":   # that chunk is here already: nothing lost
            self.pipeline.deduplicated(NAME, "udp", reason, n)
        else:
            self.pipeline.dropped(NAME, "udp", reason, n)

    def _count_drops(self) -> None:
        for reason, n in self.udp.new_drops():
            self.pipeline.dropped(NAME, "udp", reason, n)
