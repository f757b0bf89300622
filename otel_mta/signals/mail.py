"""ZoneMTA mail events -> OTLP log records, spans and metric points.

One MailEvent (a remote-log entry, or the same entry from our plugin) becomes:
- a log record, always (attributes under `mta.*`, documented in the catalog);
- for ACCEPTED / DEFERRED / REJECTED, a CLIENT span for the delivery attempt,
  child of the message's root span, timed by ZoneMTA's `start` and `timer`;
- metric points (catalog/mail.yaml).
The message's root span is kept by MessageTracker until every recipient has a
final outcome (signals/tracker.py, docs/remote-log.md). SPAMCHECK / VIRUSCHECK
entries logged before their message's QUEUED wait for it (signals/holding.py,
shared with the inbound mapping); the interface is signals/mapping.py's.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from datetime import datetime, timezone

import orjson

from otel_mta import ids
from otel_mta.correlate import BoundedMap, Correlator, Deduplicator
from otel_mta.model import MailEvent
from otel_mta.privacy import Redactor, TopN
from otel_mta.signals import logs as L
from otel_mta.signals import traces as T
from otel_mta.signals.batch import Batcher
from otel_mta.signals.fields import delivery_fields, num, queued_fields
from otel_mta.signals.holding import Holding
from otel_mta.signals.metrics import MetricStore
from otel_mta.signals.recent import LastReplies
from otel_mta.signals.tracker import MessageTracker

log = logging.getLogger("otel_mta.mail")

OUTCOME = {"ACCEPTED": "delivered", "DEFERRED": "deferred", "REJECTED": "rejected"}
SEVERITY = {
    "QUEUED": L.INFO, "NOQUEUE": L.ERROR, "ACCEPTED": L.INFO, "DEFERRED": L.WARN,
    "REJECTED": L.ERROR, "DROP": L.WARN, "DELETED": L.INFO, "QUEUE_BOUNCE": L.INFO,
    "SPAMCHECK": L.INFO, "VIRUSCHECK": L.INFO, "QUEUE_POLL": L.DEBUG,
}
# action -> (severity, its mta.action attribute, event name), made once
_ACTIONS = {a: (sev, {"mta.action": a}, "zonemta." + a.lower()) for a, sev in SEVERITY.items()}
# logged while the message is still being received, before its QUEUED entry
HOLD_ACTIONS = frozenset({"SPAMCHECK", "VIRUSCHECK"})
ENC = L.encode_attrs
LOG, SPAN = L.TAG, T.TAG
# low-cardinality attribute keys whose encoded form is worth caching
_CACHED = frozenset({
    "mta.action", "mta.zone", "mta.interface", "mta.delivery.outcome", "mta.sending_ip",
    "mta.mx.host", "server.address", "network.peer.address", "mta.bounce.category",
    "mta.recipient.domain", "mta.sender.domain", "mta.return_path.domain", "mta.header_from.domain",
    "mta.tls.version", "mta.tls.cipher", "mta.tls.authorized", "mta.protocol", "mta.smtp.code",
    "mta.smtp.enhanced_status", "mta.delivery.seq", "network.local.address", "network.protocol.name",
    "server.port", "error.type", "mta.transport", "mta.check.type", "mta.check.result",
})
# the same for phase spans: their names and the plugin's connection attributes
_PHASE_CACHED = _CACHED | {"mta.phase", "mta.connect.tries", "mta.connect.addresses", "mta.connection.reused",
                           "tls.established", "mta.tls.failures"}
# ZoneMTA entry keys this module maps; anything else of an unknown action goes to mta.entry
_ENTRY_KEYS = {"id", "seq", "action"}


def _mx_port(phases) -> int | None:
    """The MX port the plugin's connect phase reported, if any."""
    for phase in phases:
        port = phase.attributes.get("server.port")
        if type(port) is int:
            return port
    return None


def _ref(event: MailEvent) -> str:
    """How ZoneMTA's own log lines name a delivery: <queue id>.<seq>."""
    return f"{event.queue_id}.{event.seq}" if event.seq else event.queue_id


class _Attempt:
    """A delivery attempt span, encoded but for its start time."""

    __slots__ = ("span_id", "trace_id", "parent_id", "start_ns", "end_ns", "attrs", "status", "status_msg",
                 "events", "deadline_ns")

    def __init__(self, span_id, trace_id, parent_id, start_ns, end_ns, attrs, status, status_msg, events):
        self.span_id, self.trace_id, self.parent_id = span_id, trace_id, parent_id
        self.start_ns, self.end_ns, self.attrs = start_ns, end_ns, attrs
        self.status, self.status_msg, self.events = status, status_msg, events
        self.deadline_ns = 0


class MailSignals:
    def __init__(self, *, resources, logs: Batcher, spans: Batcher, metrics: MetricStore,
                 redactor: Redactor, correlator: Correlator, tracker: MessageTracker,
                 top_n: int = 100, dedup: bool = False, hold_s: float = 2.0, max_held: int = 10_000):
        self.res = resources.zonemta
        self.logs = logs
        self.spans = spans
        self.red = redactor
        self.corr = correlator
        self.tracker = tracker
        self.dedup = Deduplicator() if dedup else None
        self.hold_ns = int(hold_s * 1e9)
        self.max_held = max_held
        # SPAMCHECK / VIRUSCHECK entries waiting for their message's QUEUED (queue id -> entries)
        self._checks = Holding(hold_s, max_held)
        # The plugin's delivery phases (docs/events.md) become children of the
        # attempt span, and the plugin's timing of the attempt is better than
        # the remote log's. While a plugin is reporting (`expect_phases`, renewed
        # by every batch), an attempt span waits up to the hold time for its phases; phases
        # that come before their entry wait for it, like SPAMCHECK for QUEUED.
        # Without the plugin nothing waits: spans go out as entries arrive.
        self._phases_until = 0.0
        # ordered: taken from the front as they expire (a plain dict's first key gets slow to find)
        self._waiting: OrderedDict[bytes, _Attempt] = OrderedDict()   # attempt span id -> span waiting
        self._early: OrderedDict[bytes, tuple] = OrderedDict()        # id -> (deadline, qid, seq, phases, start)
        self._attempts = BoundedMap(32_768)         # attempt span id -> trace id, once the span went out
        self.top_domain = TopN(top_n)
        self.last_replies = LastReplies(4 * top_n + 1)   # latest deferral/rejection reply per domain (status.py)
        m = metrics
        self.m_queued = m.counter("mta.message.queued")
        self.m_deliveries_queued = m.counter("mta.delivery.queued")
        self.m_queue_errors = m.counter("mta.message.queue_errors")
        self.m_size = m.histogram("mta.message.size")
        self.m_attempts = m.counter("mta.delivery.attempts")
        self.m_duration = m.histogram("mta.delivery.duration")
        self.m_dropped = m.counter("mta.delivery.dropped")
        self.m_deleted = m.counter("mta.delivery.deleted")
        self.m_bounces = m.counter("mta.bounce.generated")
        self.m_checks = m.counter("mta.message.checks")
        self.m_unresolved = m.counter("otelmta_correlation_unresolved")
        self.m_dups = m.counter("otelmta_receiver_deduplicated_records")
        # the two busiest counters are counted in plain dicts and added to the
        # store before each collection: a dict update costs a third of Counter.add
        self._n_attempts: dict = {}
        self._n_queued: dict = {}
        self._n_deliveries: dict = {}
        m.before_collect(self.top_domain.rerank)
        m.before_collect(self.flush_counts)
        m.before_collect(lambda: m.gauge("otelmta_correlation_index_size").set(
            len(self.corr.index), resources.own))
        self._own = resources.own

    def flush_counts(self) -> None:
        """Add the counts kept in plain dicts to the metric store (before each
        collection, and when the status endpoint reads them)."""
        for counter, counts in ((self.m_attempts, self._n_attempts), (self.m_queued, self._n_queued),
                                (self.m_deliveries_queued, self._n_deliveries)):
            for values, n in counts.items():
                counter.add(n, self.res, values)
            counts.clear()

    # -- entry point -----------------------------------------------------
    def handle(self, event: MailEvent) -> None:
        if self.dedup is not None and not self.dedup.first_time(event):
            self.m_dups.add(1, self._own, (event.channel, None, "duplicate"))
            if event.phases:  # the plugin's copy brings phases the remote log lacks
                self._emit_phases(event)
            return
        action = event.action
        if action == "QUEUED" or action == "NOQUEUE":
            self.corr.learn(event.queue_id, event.entry.get("message-id"))
        elif action in HOLD_ACTIONS and self.hold_ns and self.corr.message_id(event) is None:
            if self._checks.hold(event.queue_id, event):
                return
            # no room to wait: trace it by queue id now
        self._emit(event)
        if action == "QUEUED" and self._checks.held:
            for held in self._checks.resolve(event.queue_id):
                self._emit(held)

    @property
    def attempts_evicted(self) -> int:
        """Attempt spans forgotten (the table was full) before a plugin's late phases could find them."""
        return self._attempts.evicted

    def expect_phases(self, for_s: float = 900.0) -> None:
        """A plugin is reporting: let attempt spans wait for their phases for the
        next `for_s` seconds (every batch from a plugin renews it)."""
        self._phases_until = time.monotonic() + for_s

    @property
    def phases_expected(self) -> bool:
        return self._phases_until > time.monotonic()

    def learn(self, queue_id: str, message_id: str) -> None:
        """The plugin saw the headers: map the queue id before QUEUED arrives."""
        self.corr.learn(queue_id, message_id)
        for held in self._checks.resolve(queue_id):
            self._emit(held)

    def tick(self, now_ns: int | None = None, flush_all: bool = False) -> None:
        """Release held entries whose wait is over, and end overdue root spans."""
        now_ns = now_ns or time.time_ns()
        if self._checks.held:
            for event in self._checks.expire(now_ns, flush_all):
                self._emit(event)
        # both are in deadline order (insertion order): stop at the first still waiting
        while self._early:
            attempt_id, v = next(iter(self._early.items()))
            if v[0] > now_ns and not flush_all:
                break
            self._release_early(attempt_id)
        while self._waiting:
            attempt_id, w = next(iter(self._waiting.items()))
            if w.deadline_ns > now_ns and not flush_all:
                break
            self._attempt_span(self._waiting.pop(attempt_id))
        self.tracker.expire(now_ns, flush_all=flush_all)

    @property
    def held(self) -> int:
        """Entries waiting for their message's QUEUED."""
        return self._checks.held

    # -- mapping ---------------------------------------------------------
    # This runs for every entry (tens of thousands a second), so values used
    # more than once are kept in locals, and a record's attribute dicts go to
    # its encoder as they are (one C call encodes both).
    def _emit(self, event: MailEvent) -> None:
        trace_id, mid = self.corr.resolve(event)
        if mid is None:
            self.m_unresolved.add(1, self._own, (event.channel,))
        action = event.action
        entry = event.entry
        attrs = {"mta.queue_id": event.queue_id, "mta.delivery.seq": event.seq, "mta.message_id": mid}
        outcome = OUTCOME.get(action)
        span_id = None
        log_only = None
        if outcome is not None:
            time_ns, span_id, body, log_only = self._delivery(event, trace_id, mid, outcome, attrs)
        elif action == "QUEUED" or action == "NOQUEUE":
            time_ns, body = self._queued(event, trace_id, attrs)
            if action == "QUEUED":
                span_id = self.corr.root_span_id(event.queue_id)
        else:
            time_ns, body = self._other(event, attrs)
        known = _ACTIONS.get(action)
        if known is not None:
            severity, action_attr, event_name = known
        else:
            severity, action_attr, event_name = L.INFO, {"mta.action": action}, "zonemta." + action.lower()
        if action == "QUEUE_BOUNCE" and entry.get("queued") == "no":
            severity = L.ERROR
        elif action == "VIRUSCHECK" and entry.get("result") == "infected":
            severity = L.WARN
        elif action == "SPAMCHECK" and "reject" in str(entry.get("result", "")):
            severity = L.WARN
        record = L.encode_log(time_ns, event.observed_ns, severity, body,
                              (action_attr, attrs, log_only) if log_only else (action_attr, attrs),
                              trace_id, span_id, event_name)
        self.logs.add(self.res, record)

    def _queued(self, event: MailEvent, trace_id, attrs: dict):
        """QUEUED / NOQUEUE: metrics and the message's root span; returns the
        log record's time and body. The attributes come from signals/fields.py (C twin)."""
        qid, res = event.queue_id, self.res
        body, iface, size, recipients = queued_fields(event.entry, attrs, event.action, qid, self.red)
        now = event.observed_ns
        key = (iface,)
        if event.action == "NOQUEUE":
            self.m_queue_errors.add(1, res, key)
            return now, body
        queued = self._n_queued
        queued[key] = queued.get(key, 0) + 1
        deliveries = self._n_deliveries
        deliveries[key] = deliveries.get(key, 0) + recipients
        if size is not None:
            self.m_size.record(size, res, key)
        self.tracker.queued(qid, trace_id, now, attrs, recipients, self.corr.root_span_id(qid))
        return now, body

    def _delivery(self, event: MailEvent, trace_id, mid, outcome: str, attrs: dict):
        """A delivery attempt: span and metrics; returns the log record's time,
        span id, body and its log-only attributes. The attributes shared by the
        log record and the span come from signals/fields.py (C twin), once."""
        action, qid, seq = event.action, event.queue_id, event.seq
        (body, extra, log_only, zone, ip, category, dom, response, timer, first_byte,
         defcount) = delivery_fields(event.entry, attrs, action, outcome, _ref(event), self.red)
        # ZoneMTA sends the entry as the attempt ends. `timer` is the attempt's
        # length in ms (from fetching the message to the end of DATA) and `start`
        # the ms from then until the first byte went to the MX (lib/byte-counter.js);
        # neither is a wall-clock time, and both are false/undefined when the
        # attempt failed before sending.
        end_ns = event.observed_ns
        # ms to ns through whole us: ms values may arrive as float64, and ms * 1e6
        # would lose the last digits of a timestamp
        start_ns = end_ns - int(round(timer * 1000)) * 1000 if timer is not None else end_ns
        # metrics
        attempts, key = self._n_attempts, (zone, outcome, ip, category, self.top_domain(dom))
        attempts[key] = attempts.get(key, 0) + 1
        if outcome != "delivered":
            self.last_replies.put(key[4], outcome, response, end_ns)
        if timer is not None:
            self.m_duration.record(timer / 1000.0, self.res, (zone, outcome))
        # span
        span_id = ids.attempt_span_id(qid, seq or "", action, defcount)
        if mid is not None and qid not in self.corr.index:
            self.corr.index.put(qid, mid)     # queued before a restart: keep later entries in this trace
        if trace_id:
            rejected = action == "REJECTED"
            events = None
            if first_byte is not None and timer is not None:
                events = [(start_ns + int(round(first_byte * 1000)) * 1000, "message data started", {})]
            parent_id = self.corr.root_span_id(qid)
            status, status_msg = (T.STATUS_ERROR, response) if rejected else (0, None)
            if not (self._phases_until or self._early or event.phases):  # no plugin: nothing waits
                self.spans.add(self.res, T.encode_span(trace_id, span_id, parent_id, "delivery", T.SPAN_KIND_CLIENT,
                                                       start_ns, end_ns, (attrs, extra), status, status_msg, events))
            else:
                self._attempt_with_phases(event, _Attempt(span_id, trace_id, parent_id, start_ns, end_ns,
                                                          (attrs, extra), status, status_msg, events))
        if action == "DEFERRED":
            self.tracker.deferred(qid, end_ns)
            nxt = num(event.entry.get("nextattempt"))
            if nxt is not None:
                log_only["mta.defer.next_attempt"] = datetime.fromtimestamp(nxt / 1000, timezone.utc).isoformat(
                    timespec="seconds")
        else:
            self.tracker.final(qid, event.seq, outcome, end_ns)
        return end_ns, span_id, body, log_only

    def _attempt_with_phases(self, event: MailEvent, attempt: "_Attempt") -> None:
        """The attempt span while a plugin reports delivery phases: joined with
        phases that came first, or waiting for them (up to the hold time)."""
        early = self._early.pop(attempt.span_id, None) if self._early else None
        if early is not None:              # the phases came first
            self._attempt_span(attempt, early[4], event.queue_id, event.seq, early[3])
        elif not event.phases and self._phases_until and self._phases_until > time.monotonic():
            if len(self._waiting) >= self.max_held:
                self._attempt_span(self._waiting.pop(next(iter(self._waiting))))
            attempt.deadline_ns = time.time_ns() + self.hold_ns
            self._waiting[attempt.span_id] = attempt
        else:
            self._attempt_span(attempt)
            if event.phases:
                self._emit_phases(event, attempt.trace_id, attempt.span_id)

    def _other(self, event: MailEvent, attrs: dict):
        e, red, action = event.entry, self.red, event.action
        qid = event.queue_id
        if action == "DROP":
            reason = e.get("reason")
            attrs["mta.drop.reason"] = reason
            red.address("mta.recipient", e.get("recipient"), red.recipient, attrs)
            self.m_dropped.add(1, self.res, (reason,))
            self.tracker.final(qid, event.seq, "dropped", event.observed_ns)
            return event.observed_ns, f"DROP {_ref(event)} to {attrs.get('mta.recipient.domain') or '?'}: {reason}"
        if action == "DELETED":
            reason = e.get("reason")
            attrs["mta.delete.reason"] = reason
            self.m_deleted.add(1, self.res, (reason,))
            self.tracker.final(qid, event.seq, "deleted", event.observed_ns)
            return event.observed_ns, f"DELETED {_ref(event)}: {reason}"
        if action == "QUEUE_BOUNCE":
            btype, queued = e.get("bounceType"), e.get("queued")
            attrs["mta.bounce.type"] = btype
            attrs["mta.bounce.queued"] = queued
            attrs["mta.bounce.queue_id"] = e.get("bounceId")
            attrs["mta.error"] = red.text(e.get("error"))
            self.m_bounces.add(1, self.res, (btype, queued))
            what = f"queued as {e.get('bounceId')}" if queued == "yes" else f"not queued: {attrs['mta.error']}"
            return event.observed_ns, f"QUEUE_BOUNCE {_ref(event)} {btype} bounce {what}"
        if action == "SPAMCHECK" or action == "VIRUSCHECK":
            kind = "spam" if action == "SPAMCHECK" else "virus"
            result = e.get("result")
            attrs["mta.check.type"] = kind
            attrs["mta.check.result"] = result
            if kind == "spam":
                try:
                    attrs["mta.check.score"] = float(e.get("score"))
                except (TypeError, ValueError):
                    pass
                attrs["mta.check.tests"] = e.get("tests") or None
            else:
                attrs["mta.check.response"] = e.get("response") or None
            self.m_checks.add(1, self.res, (kind, result))
            return event.observed_ns, f"{action} {qid}: {result}"
        # an action this version has no mapping for: keep all of it, masked
        # None is JavaScript's undefined in a datagram; JSON (the plugin) leaves it out
        rest = {k: v for k, v in e.items() if k not in _ENTRY_KEYS and v is not None}
        attrs["mta.entry"] = red.text(orjson.dumps(rest, default=str).decode()) if rest else None
        return event.observed_ns, f"{action} {_ref(event)}"

    # -- plugin: delivery phases ---------------------------------------------
    def phases(self, queue_id: str, seq: str, action: str, defcount: int, phases: list,
               start_ns: int | None = None) -> None:
        """The plugin's connect / tls / smtp timing of one attempt (a
        `delivery.phases` event): child spans of the attempt span, whose start
        becomes the plugin's (`start_ns`, when ZoneMTA fetched the delivery;
        ZoneMTA's own `timer` misses the connection, and failed attempts
        have none).

        The entry usually came first and its span waits for this (up to the
        hold time); if the span went out already, only the children follow;
        if the entry has not come yet, the phases wait for it.
        """
        d = defcount if action == "DEFERRED" else 0
        attempt_id = ids.attempt_span_id(queue_id, seq, action, d)
        waiting = self._waiting.pop(attempt_id, None) if self._waiting else None
        if waiting is not None:
            self._attempt_span(waiting, start_ns, queue_id, seq, phases)
            return
        trace_id = self._attempts.pop(attempt_id, None)
        if trace_id is not None:               # the span went out already (held too long)
            self._phase_spans(trace_id, attempt_id, queue_id, seq, phases)
            return
        if attempt_id in self._early:
            return  # reported twice: span ids must stay unique
        if len(self._early) >= self.max_held:
            self._release_early(next(iter(self._early)))
        self._early[attempt_id] = (time.time_ns() + self.hold_ns, queue_id, seq, phases, start_ns)

    def _attempt_span(self, a: "_Attempt", plugin_start_ns: int | None = None, queue_id: str | None = None,
                      seq: str | None = None, phases=None) -> None:
        """The attempt's CLIENT span; with the plugin's phases, timed by the plugin and with its children."""
        start = a.start_ns if plugin_start_ns is None else min(plugin_start_ns, a.end_ns)
        attrs = a.attrs
        port = _mx_port(phases) if phases else None
        if port is not None:   # only the plugin knows the port ZoneMTA connected to
            attrs = (*attrs, {"server.port": port}) if type(attrs) is tuple else (attrs, {"server.port": port})
        self.spans.add(self.res, T.encode_span(a.trace_id, a.span_id, a.parent_id, "delivery", T.SPAN_KIND_CLIENT,
                                               start, a.end_ns, attrs, a.status, a.status_msg, a.events))
        if phases is not None:
            self._phase_spans(a.trace_id, a.span_id, queue_id, seq, phases)
        elif self._phases_until and self._phases_until > time.monotonic():
            self._attempts.put(a.span_id, a.trace_id)  # late phases (only a plugin sends them) still find it

    def _release_early(self, attempt_id: bytes) -> None:
        """The entry never came (lost, or the remote log is off): children in the message's trace anyway."""
        _, qid, seq, phases, _ = self._early.pop(attempt_id)
        trace_id = self.corr.trace_id(MailEvent("", qid, seq, {}, 0, "events"))
        self._phase_spans(trace_id, attempt_id, qid, seq, phases)

    def _emit_phases(self, event: MailEvent, trace_id: bytes | None = None, attempt_id: bytes | None = None) -> None:
        """Child spans for phases carried on the entry itself (MailEvent.phases)."""
        if trace_id is None:
            trace_id = self.corr.trace_id(event)
        if attempt_id is None:
            d = event.defcount if event.action == "DEFERRED" else 0
            attempt_id = ids.attempt_span_id(event.queue_id, event.seq or "", event.action, d)
        self._phase_spans(trace_id, attempt_id, event.queue_id, event.seq, event.phases or ())

    def _phase_spans(self, trace_id: bytes, attempt_id: bytes, queue_id: str, seq: str | None, phases) -> None:
        done = set()
        for phase in phases:
            if phase.name in done:  # one span per name: its id is derived from the name
                continue
            done.add(phase.name)
            attrs = {"mta.phase": phase.name, "mta.queue_id": queue_id, "mta.delivery.seq": seq}
            attrs.update(phase.attributes)
            if phase.error:
                attrs["error.type"] = phase.error
            status = T.STATUS_ERROR if phase.error else 0
            record = T.encode_span(trace_id, ids.phase_span_id(attempt_id, phase.name), attempt_id,
                                   phase.name, T.SPAN_KIND_INTERNAL, phase.start_ns, phase.end_ns,
                                   ENC(SPAN, attrs, _PHASE_CACHED), status, phase.error)
            self.spans.add(self.res, record)
