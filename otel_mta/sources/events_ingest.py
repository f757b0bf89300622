"""Plugin events -> the pipeline (docs/events.md). The HTTP side (auth, limits,
status codes) is in events_http.py; this module knows what each event means.

- `log.entry` becomes the very MailEvent a remote-log datagram becomes, so both
  channels give the same logs, spans and metrics (and the Deduplicator keeps
  one copy when both are on).
- `message.headers` / `message.queue` teach the queue id -> Message-ID index.
- `delivery.phases` become child spans of the attempt span (MailSignals.phases).
- `queue.release` / `queue.bounce` tell the root-span tracker a recipient is
  final; `queue.delayed` feeds `mta.delivery.deferral_age`.
- `plugin.health` becomes the otelmta_plugin_* self-telemetry.
- The Haraka plugin's `haraka.connection`, `haraka.transaction`,
  `haraka.delivery` and `haraka.log` (batches of version 2) become the inbound
  model types (model.py) for signals/inbound.py.
Retried batches repeat their event ids: ids seen within the window are ignored
and counted (`otelmta_receiver_deduplicated_records{reason=duplicate_id}`).
"""
from __future__ import annotations

import logging
import time

from otel_mta.correlate import HashWindow
from otel_mta.model import (InboundConnection, InboundRecipient, InboundTransaction, LogLine, MailEvent, Phase,
                            Refusal, RelayAttempt, SmtpClient)
from otel_mta.pipeline import RateLimitedLog
from otel_mta.sources.events_schema import Invalid, check_batch, check_event

log = logging.getLogger("otel_mta.events")
MS = 1_000_000  # ns per ms
RELEASE_OUTCOME = {"delivered": "delivered", "rejected": "rejected", "unknown": "dropped"}
# phase attributes the plugin documents (docs/events.md) and their types; others are dropped
PHASE_ATTRIBUTES = {
    "server.address": str, "server.port": int, "network.peer.address": str,
    "network.local.address": str, "mta.connect.tries": int, "mta.connect.addresses": int,
    "mta.connection.reused": bool, "tls.established": bool, "mta.tls.failures": int,
    "mta.smtp.envelope_ms": int, "mta.smtp.data_ms": int,
}
HEALTH_COUNTERS = ("dropped", "sent", "failed", "retries", "evicted", "hook_errors")
HEALTH_STALE_S = 900  # a plugin process not heard of for this long has gone: its series go too
HEALTH_MAX_PROCESSES = 4096  # plugin processes remembered between sweeps; the least recently heard go first
MAX_ERRORS = 10       # per reply


def _phase_attrs(raw: dict) -> dict:
    out = {}
    for key, value in raw.items():
        want = PHASE_ATTRIBUTES.get(key)
        if want is None:
            continue
        t = type(value)
        if t is want:
            out[key] = value if t is not str or len(value) <= 255 else value[:255]
        elif want is int and t is float and value.is_integer():
            out[key] = int(value)
    return out


class Result:
    """What one batch did; the HTTP reply body."""

    __slots__ = ("accepted", "rejected", "duplicates", "errors", "reasons")

    def __init__(self):
        self.accepted = 0
        self.rejected = 0
        self.duplicates = 0
        self.errors: list = []      # [{"index", "reason"}], the first MAX_ERRORS
        self.reasons: dict = {}     # reason -> count

    def reject(self, index: int, reason: str) -> None:
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"index": index, "reason": reason})

    def body(self) -> dict:
        out = {"accepted": self.accepted, "rejected": self.rejected, "duplicates": self.duplicates}
        if self.errors:
            out["errors"] = self.errors
        return out


class PluginHealth:
    """plugin.health -> otelmta_plugin_* series keyed by (instance, context, pid)."""

    def __init__(self, metrics, own):
        self.own = own
        self.buffered = metrics.gauge("otelmta_plugin_buffered")
        self.counters = {name: metrics.counter("otelmta_plugin_" + name) for name in HEALTH_COUNTERS}
        self._seen: dict = {}   # key -> monotonic time of the last report
        metrics.before_collect(self._forget_stale)

    def update(self, source: dict, ev: dict) -> None:
        key = (source["instance"], source["context"], int(source["pid"]))
        seen = self._seen
        seen.pop(key, None)          # re-inserted: the dict stays in order of last report
        seen[key] = time.monotonic()
        if len(seen) > HEALTH_MAX_PROCESSES:   # many restarts within the sweep interval
            self._forget(next(iter(seen)))
        self.buffered.set(int(ev["buffered"]), self.own, key)
        for name, counter in self.counters.items():
            # cumulative since that plugin process started: the latest report is the value
            counter.observe(int(ev[name]), self.own, key)

    def _forget_stale(self) -> None:
        cutoff = time.monotonic() - HEALTH_STALE_S
        for key in [k for k, t in self._seen.items() if t < cutoff]:
            self._forget(key)

    def _forget(self, key) -> None:
        del self._seen[key]
        for inst in (self.buffered, *self.counters.values()):
            inst.series.pop((self.own, key), None)


class Ingest:
    def __init__(self, pipeline, dedup_window: int = 100_000, receiver: str = "events", transport: str = "http"):
        self.pipeline = pipeline
        self.receiver, self.transport = receiver, transport
        self.mail = pipeline.mail
        self._handle_mail = pipeline.mail.handle
        self.tracker = pipeline.mail.tracker
        self._index = pipeline.correlator.index
        self._handle_inbound = pipeline.inbound.handle
        self._seen = HashWindow(dedup_window) if dedup_window else None
        self._say = RateLimitedLog(log)
        m, zonemta = pipeline.metrics, pipeline.resources.zonemta
        self._zonemta = zonemta
        self.m_deferral_age = m.histogram("mta.delivery.deferral_age")
        self.health = PluginHealth(m, pipeline.resources.own)
        self._by_type = {
            "log.entry": self._log_entry, "message.headers": self._message_headers,
            "message.queue": self._message_queue, "delivery.phases": self._phases,
            "queue.release": self._queue_release, "queue.bounce": self._queue_bounce,
            "queue.delayed": self._queue_delayed, "plugin.health": self._plugin_health,
            "haraka.connection": self._haraka_connection, "haraka.transaction": self._haraka_transaction,
            "haraka.delivery": self._haraka_delivery, "haraka.log": self._haraka_log,
        }

    # -- a batch ------------------------------------------------------------------
    def batch(self, doc, max_events: int = 10_000) -> Result:
        """A whole batch at once (tests, tools); raises Invalid for a broken envelope."""
        version = check_batch(doc, max_events)
        result = Result()
        for _ in self.steps(doc["source"], doc["events"], result, version=version):
            pass
        self.count(result)
        return result

    def steps(self, source: dict, events: list, result: Result, size: int = 500, version: int = 1):
        """Map the events, yielding every `size` events so that the HTTP side can
        let the event loop run. delivery.phases go first: an attempt whose entry
        is in the same batch then gets the plugin's timing (MailSignals.phases).
        `version` is the batch's (check_batch): v1 batches carry ZoneMTA's types only."""
        if source.get("service") != "haraka":
            self.mail.expect_phases()  # a ZoneMTA plugin is reporting: attempt spans wait briefly for their phases
        first, rest = [], []
        for i, ev in enumerate(events):
            (first if type(ev) is dict and ev.get("type") == "delivery.phases" else rest).append(i)
        for indexes in (first, rest):
            for start in range(0, len(indexes), size):
                self.run(source, events, indexes[start:start + size], result, version)
                yield

    def run(self, source: dict, events: list, indexes, result: Result, version: int = 1) -> None:
        """Check, de-duplicate and map events[i] for i in `indexes`."""
        seen = self._seen
        by_type = self._by_type
        for i in indexes:
            ev = events[i]
            try:
                kind = check_event(ev, version)
            except Invalid as err:
                result.reject(i, err.reason)
                continue
            if seen is not None and seen.seen(ev["id"]):
                result.duplicates += 1
                continue
            try:
                by_type[kind](ev, source)
            except Invalid as err:      # valid JSON, but nothing the pipeline can use
                result.reject(i, err.reason)
                continue
            except Exception:           # a mapping bug must not cost the rest of the batch
                result.reject(i, "internal_error")
                self._say(logging.ERROR, "internal_error", "could not map a %s event (please report this)", kind,
                          exc_info=True)
                continue
            result.accepted += 1

    def count(self, result: Result) -> None:
        p, r, t = self.pipeline, self.receiver, self.transport
        if result.accepted:
            p.accepted(r, t, result.accepted)
        for reason, n in result.reasons.items():
            p.refused(r, t, reason, n)
        if result.duplicates:   # a retried batch: stored already, nothing lost
            p.deduplicated(r, t, "duplicate_id", result.duplicates)

    # -- one handler per type; the event is valid (events_schema) ------------------
    def _log_entry(self, ev: dict, source: dict) -> None:
        entry = ev["entry"]
        action = entry.get("action")
        if not action:
            raise Invalid("not_an_entry")
        qid = entry["id"]
        seq = entry.get("seq")
        self._handle_mail(MailEvent(action, qid if type(qid) is str else str(qid),
                                    (seq if type(seq) is str else str(seq)) if seq else None,
                                    entry, int(ev["time_ms"]) * MS, self.receiver))

    def _message_headers(self, ev: dict, source: dict) -> None:
        self.mail.learn(ev["queue_id"], ev["message_id"])

    def _message_queue(self, ev: dict, source: dict) -> None:
        # QUEUED (log.entry or remote log) counts the message; this only teaches the index
        mid = ev.get("message_id")
        if mid and ev["queue_id"] not in self._index:   # message.headers usually taught it already
            self.mail.learn(ev["queue_id"], mid)

    def _phases(self, ev: dict, source: dict) -> None:
        phases = []
        for ph in ev["phases"]:
            attrs = ph.get("attributes")
            phases.append(Phase(ph["name"], int(ph["start_ms"]) * MS, int(ph["end_ms"]) * MS,
                                _phase_attrs(attrs) if attrs else {}, ph.get("error")))
        start = ev.get("attempt_start_ms")
        start_ns = int(start) * MS if start is not None else min(p.start_ns for p in phases)
        self.mail.phases(ev["queue_id"], ev["seq"], ev["action"], int(ev["defcount"]), phases, start_ns)

    def _queue_release(self, ev: dict, source: dict) -> None:
        seq = ev.get("seq")
        if seq:
            self.tracker.final(ev["queue_id"], seq, RELEASE_OUTCOME[ev["status"]], int(ev["time_ms"]) * MS)

    def _queue_bounce(self, ev: dict, source: dict) -> None:
        seq = ev.get("seq")
        if seq:
            self.tracker.final(ev["queue_id"], seq, "rejected", int(ev["time_ms"]) * MS)

    def _queue_delayed(self, ev: dict, source: dict) -> None:
        first, last = ev.get("first_ms"), ev.get("last_ms")
        if first is not None and last is not None and last >= first:
            self.m_deferral_age.record((last - first) / 1000.0, self._zonemta,
                                       (ev.get("zone") or None, ev.get("category") or None))

    def _plugin_health(self, ev: dict, source: dict) -> None:
        self.health.update(source, ev)

    # -- the Haraka plugin (version 2) -----------------------------------------------
    def _haraka_connection(self, ev: dict, source: dict) -> None:
        refusals = [Refusal(r["stage"], int(r["code"]), r["reply"], r.get("plugin"), int(r["time_ms"]) * MS)
                    for r in ev.get("refusals", ())]
        tx = ev.get("transactions")
        self._handle_inbound(InboundConnection(ev["connection_id"], int(ev["start_ms"]) * MS, int(ev["time_ms"]) * MS,
                                               ev["outcome"], int(tx) if tx is not None else None, refusals,
                                               _client(ev)))

    def _haraka_transaction(self, ev: dict, source: dict) -> None:
        rcpts = [InboundRecipient(r["address"], r["outcome"], int(r["time_ms"]) * MS, _int_or_none(r.get("code")),
                                  r.get("reply"), r.get("stage"), r.get("plugin")) for r in ev["recipients"]]
        omitted = ev.get("recipients_omitted")
        self._handle_inbound(InboundTransaction(
            ev["transaction_id"], ev["connection_id"], int(ev["start_ms"]) * MS, int(ev["time_ms"]) * MS,
            ev["outcome"], ev["mail_from"], rcpts, _client(ev), code=_int_or_none(ev.get("code")),
            reply=ev.get("reply"), stage=ev.get("stage"), plugin=ev.get("plugin"),
            omitted={k: int(v) for k, v in omitted.items()} if omitted else None,
            message_id=ev.get("message_id"), size=_int_or_none(ev.get("size")),
            data_start_ns=_ns(ev.get("data_start_ms")), data_end_ns=_ns(ev.get("data_end_ms")),
            outbound_queue=ev.get("outbound_queue", False)))

    def _haraka_delivery(self, ev: dict, source: dict) -> None:
        rcpts = [(r["address"], _int_or_none(r.get("code")), r.get("status"), r.get("reply")) for r in ev["recipients"]]
        self._handle_inbound(RelayAttempt(
            ev["transaction_id"], ev["outcome"], ev["domain"], rcpts, int(ev["time_ms"]) * MS,
            start_ns=_ns(ev.get("start_ms")), queued_ns=_ns(ev.get("queued_ms")),
            attempt=int(ev.get("attempt", 0)), message_id=ev.get("message_id"), mx=ev.get("mx"), ip=ev.get("ip"),
            port=_int_or_none(ev.get("port")), mode=ev.get("mode"), tls=ev.get("tls"), reply=ev.get("reply"),
            retry_in_s=_int_or_none(ev.get("retry_in_s")), omitted=int(ev.get("recipients_omitted", 0))))

    def _haraka_log(self, ev: dict, source: dict) -> None:
        level = ev["level"]
        attrs = {}
        uuid = ev.get("uuid")
        if uuid:
            attrs["haraka.transaction.id" if "." in uuid else "haraka.connection.id"] = uuid
        if ev.get("origin"):
            attrs["haraka.log.origin"] = ev["origin"]
        t = int(ev["time_ms"]) * MS
        self._handle_inbound(LogLine(t, time.time_ns(), HARAKA_SEVERITY[level], level, ev["message"], attrs,
                                     "haraka", event_name="haraka.log"))


# Haraka's log levels -> OpenTelemetry severity numbers (the syslog table of the log data model)
HARAKA_SEVERITY = {"DATA": 1, "PROTOCOL": 2, "DEBUG": 5, "INFO": 9, "NOTICE": 10, "WARN": 13, "ERROR": 17,
                   "CRIT": 18, "ALERT": 19, "EMERG": 21}


def _int_or_none(v):
    return int(v) if v is not None else None


def _ns(ms):
    return int(ms) * MS if ms is not None else None


def _client(ev: dict) -> SmtpClient:
    port = ev.get("local_port")
    return SmtpClient(ev.get("remote_ip"), ev.get("remote_host"), ev.get("helo"),
                      int(port) if port is not None else None, ev.get("tls", False), ev.get("esmtp", False),
                      ev.get("relaying", False), ev.get("auth_user"))
