"""What every source hands its events to: the signal builders, the metric store
and the self-telemetry counters, wired to one exporter.

The mappings (signals/mail.py for ZoneMTA, signals/inbound.py for Haraka) have
the same small interface (signals/mapping.py): handle(event) and tick(now_ns,
flush_all). They share the correlator (which trace a message is in), the
batchers, the metric store, the redactor and the table of messages waiting
for their final outcome (signals/final.py), all made here."""
from __future__ import annotations

import logging
import time

from otel_mta import catalog
from otel_mta.config import Settings
from otel_mta.correlate import Correlator
from otel_mta.model import LogLine
from otel_mta.privacy import Redactor
from otel_mta.resources import Resources
from otel_mta.signals import logs as L
from otel_mta.signals import wire
from otel_mta.signals.batch import Batcher
from otel_mta.signals.final import QueuedMessages
from otel_mta.signals.inbound import InboundSignals
from otel_mta.signals.mail import MailSignals
from otel_mta.signals.mapping import Mapping
from otel_mta.signals.metrics import MetricStore
from otel_mta.signals.tracker import MessageTracker


class RateLimitedLog:
    """At most one line per reason per `interval_s`, with the count it hid."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0):
        self.logger = logger
        self.interval_ns = int(interval_s * 1e9)
        self._last: dict = {}

    def __call__(self, level: int, reason: str, msg: str, *args, exc_info: bool = False) -> None:
        now = time.monotonic_ns()
        last, hidden = self._last.get(reason, (0, 0))
        if now - last < self.interval_ns and last:
            self._last[reason] = (last, hidden + 1)
            return
        self._last[reason] = (now, 0)
        if hidden:
            msg += f" ({hidden} more like this not shown)"
        self.logger.log(level, msg, *args, exc_info=exc_info)


class Pipeline:
    def __init__(self, settings: Settings, submit, mail_channels: int = 1):
        s = settings
        self.settings = s
        self.resources = Resources(extra=s.resource.attributes, self_service=s.resource.service_name,
                                   zonemta_service=s.resource.zonemta_service_name,
                                   instance_id=s.resource.instance_id)
        cat = catalog.load()
        self.metrics = MetricStore(cat, max_series=s.metrics.max_series)
        lim = s.limits
        wire.set_limits(lim.for_logs(), lim.for_spans(), lim.free_text_length, cat.free_text_keys(),
                        cat.passthrough_prefixes)
        self.logs = Batcher("logs", submit, s.batch.max_batch, s.exporter.max_request_size)
        self.spans = Batcher("traces", submit, s.batch.max_batch, s.exporter.max_request_size)
        p = s.privacy
        self.redactor = Redactor(recipient=p.recipient, sender=p.sender, subject=p.subject, user=p.user,
                                 client=p.client, hmac_key=p.hmac_key.encode() if p.hmac_key else None)
        # messages waiting for their last recipient's outcome (ZoneMTA's deferred, Haraka's relayed):
        # one bounded table for both mappings (signals/final.py)
        self.queued_messages = QueuedMessages(s.correlation.max_queued_messages)
        self.queued_messages.observe(self.metrics, self.resources.own)
        self.tracker = MessageTracker(self.spans, self.resources.zonemta,
                                      capacity=s.correlation.max_open_roots,
                                      max_hold_s=s.correlation.root_hold, metrics=self.metrics,
                                      own_resource=self.resources.own, queued=self.queued_messages)
        self.correlator = Correlator(s.correlation.index_size)
        self.mail = MailSignals(resources=self.resources, logs=self.logs, spans=self.spans,
                                metrics=self.metrics, redactor=self.redactor,
                                correlator=self.correlator, tracker=self.tracker,
                                top_n=s.metrics.top_n, dedup=mail_channels > 1,
                                hold_s=s.correlation.hold)
        self.inbound = InboundSignals(resources=self.resources, logs=self.logs, spans=self.spans,
                                      metrics=self.metrics, redactor=self.redactor, correlator=self.correlator,
                                      top_n=s.metrics.top_n, hold_s=s.correlation.hold,
                                      queued=self.queued_messages)
        self.mappings: tuple[Mapping, ...] = (self.mail, self.inbound)
        own = self.resources.own
        self._own = own
        self.congested = lambda: False  # the app points this at the export queue (receivers push back)
        self._accepted = self.metrics.counter("otelmta_receiver_accepted_records")
        self._refused = self.metrics.counter("otelmta_receiver_refused_records")
        self._dropped = self.metrics.counter("otelmta_receiver_dropped_records")
        self._deduplicated = self.metrics.counter("otelmta_receiver_deduplicated_records")
        self._pushed_back = self.metrics.counter("otelmta_receiver_pushed_back_requests")
        self.metrics.before_collect(self._count_losses)
        truncated = self.metrics.counter("otelmta_attribute_values_truncated")
        self.metrics.before_collect(lambda: [truncated.observe(n, own, (signal,))
                                             for signal, n in wire.truncations().items()])

    # self-telemetry, for sources
    def accepted(self, receiver: str, transport: str, n: int = 1) -> None:
        self._accepted.add(n, self._own, (receiver, transport))

    def refused(self, receiver: str, transport: str, reason: str, n: int = 1) -> None:
        self._refused.add(n, self._own, (receiver, transport, reason))

    def dropped(self, receiver: str, transport: str, reason: str, n: int = 1) -> None:
        """Records lost (a full buffer, a chunk set that never completed, ...)."""
        self._dropped.add(n, self._own, (receiver, transport, reason))

    def deduplicated(self, receiver: str, transport: str | None, reason: str, n: int = 1) -> None:
        """Records ignored on purpose because the same one arrived already: not a loss."""
        self._deduplicated.add(n, self._own, (receiver, transport, reason))

    def pushed_back(self, receiver: str, transport: str, reason: str) -> None:
        """A request answered 503 + Retry-After (nothing of it was read)."""
        self._pushed_back.add(1, self._own, (receiver, transport, reason))

    def _count_losses(self) -> None:
        """What the pipeline's own tables forgot, and what the metric store folded away."""
        m, own, mail = self.metrics, self._own, self.mail
        evicted = m.counter("otelmta_correlation_evicted")
        evicted.observe(mail.corr.index.evicted, own, ("queue_ids",))
        evicted.observe(mail.corr.hints.evicted, own, ("gelf_hints",))
        evicted.observe(mail.attempts_evicted, own, ("attempts",))
        evicted.observe(self.tracker.evicted, own, ("root_spans",))
        overflowed = m.counter("otelmta_metric_points_overflowed")
        for name, inst in list(m.instruments.items()):
            if inst.overflowed:
                overflowed.observe(inst.overflowed, own, (name,))

    def emit_log_line(self, line: LogLine, cached_keys: frozenset = frozenset()) -> None:
        """A log line from another producer (GELF): encode and batch it."""
        res = self.resources.producer(line.service, line.host)
        record = L.encode_log(line.time_ns, line.observed_ns, line.severity_number, line.body,
                              L.encode_attrs(L.TAG, line.attributes, cached_keys), line.trace_id,
                              line.span_id, line.event_name, line.severity_text)
        self.logs.add(res, record)

    def tick(self, now_ns: int | None = None, flush_all: bool = False) -> None:
        """Let every mapping release what waited long enough (everything with flush_all)."""
        for mapping in self.mappings:
            mapping.tick(now_ns, flush_all)

    def flush(self) -> None:
        self.logs.flush()
        self.spans.flush()
