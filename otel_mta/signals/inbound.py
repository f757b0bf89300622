"""Inbound SMTP (the Haraka plugin's events) -> OTLP log records, spans and metrics.

- InboundTransaction: a SERVER span `inbound` for the SMTP transaction, from
  MAIL FROM to its end, in the message's trace when it has a Message-ID (the
  trace id every producer derives from it, docs/trace-ids.md: so a message
  Haraka accepts and relays through ZoneMTA, or stores in WildDuck, is one
  trace), else in a trace of its own keyed by the transaction uuid. A log
  record per recipient, with the reply Haraka gave, and one for the
  transaction. Metrics of catalog/inbound.yaml.
- InboundConnection: mta.inbound.connections; a log record per refusal outside
  a transaction (the greeting, HELO, ...).
- RelayAttempt (Haraka as a relay): a CLIENT `delivery` span per attempt, child
  of the inbound span, and mta.delivery.* metrics, as ZoneMTA's attempts get.
  A message Haraka queued in its own outbound queue waits (signals/final.py)
  until its last recipient is delivered or bounced, then gets a
  `message.final` span, child of the inbound span: its state, time in queue
  and recipients by outcome, as a deferred ZoneMTA message does.
- LogLine from Haraka (its log hook): in its transaction's trace; a line that
  comes before its transaction ended waits for it (correlation.hold).

Personal data follows privacy.* as for ZoneMTA: addresses reduced to their
domain, client identifiers and user names dropped, addresses in replies and
log lines masked (docs/privacy.md).
"""
from __future__ import annotations

import ipaddress
import re
import time
from datetime import datetime, timezone

from otel_mta import ids
from otel_mta.correlate import BoundedMap, Correlator
from otel_mta.model import InboundConnection, InboundTransaction, LogLine, RelayAttempt, SmtpClient
from otel_mta.privacy import Redactor, TopN
from otel_mta.signals import logs as L
from otel_mta.signals import traces as T
from otel_mta.signals.batch import Batcher
from otel_mta.signals.final import MessageFinal, QueuedMessages
from otel_mta.signals.holding import Holding
from otel_mta.signals.metrics import MetricStore

SERVICE = "haraka"
ENC = L.encode_attrs
LOG, SPAN = L.TAG, T.TAG
CACHED = frozenset({"mta.inbound.outcome", "mta.inbound.stage", "mta.inbound.plugin", "mta.smtp.code",
                    "mta.recipient.domain", "mta.sender.domain", "mta.transport", "server.port", "tls.established",
                    "mta.delivery.outcome", "server.address", "network.peer.address", "network.protocol.name",
                    "haraka.log.origin", "error.type"})
_SEVERITY = {"accepted": L.INFO, "aborted": L.INFO, "refused": L.WARN, "deferred": L.WARN}
_RELAY = {"delivered": ("ACCEPTED", "delivered", L.INFO), "deferred": ("DEFERRED", "deferred", L.WARN),
          "bounced": ("REJECTED", "rejected", L.ERROR)}
# stages whose refusal is counted per recipient, not again for the transaction
_RCPT_STAGES = frozenset(("rcpt", "rcpt_ok"))
_QUEUE_STAGES = frozenset(("queue", "queue_outbound"))
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")
# Haraka's log lines name the client as key=value (connect ip=..., disconnect rdns=... helo=...)
_CLIENT_KEYS = re.compile(r"\b(ip|rdns|helo|remote|remote_ip|remote_host|host)=(\"(?:[^\"\\]|\\.)*\"|\S+)")
# a run of hex digits, dots and colons with a dot or colon in it: an IP address literal if ipaddress says so
# (after "=" it is a key's value: the client's are masked by key above, local_ip= is our own)
_IP_CANDIDATE = re.compile(r"(?<![\w.:=])[0-9A-Fa-f:.]*[.:][0-9A-Fa-f:.]*(?![\w.:])")


def transaction_of(queue_id: str) -> str:
    """The inbound transaction of a Haraka outbound queue entry: `<conn>.<N>[.<domain N>]` -> `<conn>.<N>`."""
    parts = queue_id.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else queue_id


def transport(client: SmtpClient) -> str:
    """As Haraka's Received header says it (RFC 3848): SMTP, ESMTP, ESMTPS, ESMTPSA..."""
    name = "ESMTP" if client.esmtp else "SMTP"
    if client.tls:
        name += "S"
    if client.auth_user:
        name += "A"
    return name


def _enhanced(reply: str | None) -> str | None:
    m = _ENHANCED.match(reply) if reply else None
    return m.group(1) if m else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class InboundSignals:
    def __init__(self, *, resources, logs: Batcher, spans: Batcher, metrics: MetricStore, redactor: Redactor,
                 correlator: Correlator, top_n: int = 100, hold_s: float = 2.0, max_held: int = 10_000,
                 queued: QueuedMessages | None = None):
        self.res = resources.producer(SERVICE)
        self.logs = logs
        self.spans = spans
        self.red = redactor
        self.corr = correlator
        # transaction uuid -> (trace id, inbound span id): for log lines and relay attempts
        self._traces = BoundedMap(32_768)
        self._lines = Holding(hold_s, max_held)
        # relayed messages until their last recipient's outcome (the table is shared with ZoneMTA's mapping)
        self.finals = MessageFinal(queued if queued is not None else QueuedMessages(100_000), spans, self.res,
                                   "haraka.transaction.id", ids.inbound_span_id, metrics)
        self.top_domain = TopN(top_n)
        m = metrics
        self.m_connections = m.counter("mta.inbound.connections")
        self.m_transactions = m.counter("mta.inbound.transactions")
        self.m_recipients = m.counter("mta.inbound.recipients")
        self.m_refusals = m.counter("mta.inbound.refusals")
        self.m_size = m.histogram("mta.inbound.message.size")
        self.m_duration = m.histogram("mta.inbound.transaction.duration")
        self.m_attempts = m.counter("mta.delivery.attempts")
        self.m_attempt_duration = m.histogram("mta.delivery.duration")
        m.before_collect(self.top_domain.rerank)
        self._handlers = {InboundTransaction: self._transaction, InboundConnection: self._connection,
                          RelayAttempt: self._relay, LogLine: self._log_line}

    # -- the interface every mapping has (signals/mail.py too) --------------------
    def handle(self, event) -> None:
        self._handlers[type(event)](event)

    def tick(self, now_ns: int | None = None, flush_all: bool = False) -> None:
        """Log lines whose transaction did not end in time go out without a trace."""
        if self._lines:
            for line in self._lines.expire(now_ns, flush_all):
                self._emit_line(line, None, None)

    # -- transactions --------------------------------------------------------------
    def _transaction(self, t: InboundTransaction) -> None:
        red, res = self.red, self.res
        mid = self.corr.normalize(t.message_id)
        tid = t.transaction_id
        trace_id = self.corr.trace_for_key("mid:" + mid if mid else "qid:" + tid.strip(ids.WS))
        span_id = ids.inbound_span_id(tid)
        self._traces.put(tid, (trace_id, span_id))
        self.corr.learn(tid, t.message_id)   # for `otel-mta trace-id <transaction uuid>` (otel_mta/lookup.py)
        outcome = t.outcome
        reply = red.text(t.reply) if t.reply else None
        base = {"haraka.transaction.id": tid, "mta.message_id": mid}
        red.address("mta.sender", t.mail_from, red.sender, base)
        sender_dom = base.get("mta.sender.domain")

        # recipients: a log record each, metrics
        accepted: list = []
        for r in t.recipients:
            if r.outcome == "accepted":
                accepted.append(r.address)
            self._recipient(r, base, trace_id, span_id, t.stage)
        if t.omitted:
            for rcpt_outcome, n in t.omitted.items():
                if n:
                    self.m_recipients.add(n, res, (rcpt_outcome, None))

        attrs = dict(base)
        attrs.update({"haraka.connection.id": t.connection_id, "mta.inbound.outcome": outcome,
                      "mta.inbound.stage": t.stage, "mta.inbound.plugin": t.plugin, "mta.smtp.code": t.code,
                      "mta.smtp.response": reply, "mta.smtp.enhanced_status": _enhanced(t.reply),
                      "mta.message.size": t.size, "mta.transport": transport(t.client)})
        red.address_list("mta.recipient", ",".join(a for a in accepted if a), red.recipient, attrs)
        # a count is not personal: set whatever the recipient mode (address_list leaves it out with drop)
        n = attrs["mta.recipient.count"] = len(accepted) + (t.omitted or {}).get("accepted", 0)
        if outcome == "accepted" and t.outbound_queue and n:
            self.finals.waiting(tid, trace_id, t.end_ns, n)   # Haraka delivers it: message.final at its end
        span_extra = {"server.port": t.client.local_port, "tls.established": t.client.tls}
        self._client(t.client, attrs)

        # the span
        failed = outcome in ("refused", "deferred") and t.stage in _QUEUE_STAGES
        events = []
        if t.data_start_ns:
            events.append((t.data_start_ns, "data started", {}))
        if t.data_end_ns:
            events.append((t.data_end_ns, "data received", {}))
        status_msg = f"{t.code} {reply}" if failed and t.code else None
        self.spans.add(res, T.encode_span(trace_id, span_id, None, "inbound", T.SPAN_KIND_SERVER, t.start_ns,
                                          t.end_ns, ENC(SPAN, (attrs, span_extra), CACHED),
                                          T.STATUS_ERROR if failed else 0, status_msg, events or None))

        # the transaction's log record
        body = f"SMTP {outcome} {tid}"
        if sender_dom:
            body += f" from {sender_dom}"
        if n:
            doms = attrs.get("mta.recipient.domain")
            doms = ", ".join(doms) if type(doms) is list else doms
            body += f" for {_plural(n, 'recipient')}" + (f" ({doms})" if doms else "")
        if t.size is not None:
            body += f", {t.size} bytes"
        body += f" in {max(0, t.end_ns - t.start_ns) // 1_000_000} ms"
        if outcome != "accepted" and t.stage:
            body += f" at {t.stage}" + (f" by {t.plugin}" if t.plugin else "")
        if t.code:
            body += f": {t.code} {reply or ''}".rstrip()
        severity = L.ERROR if failed else _SEVERITY[outcome]
        self.logs.add(res, L.encode_log(t.end_ns, time.time_ns(), severity, body, ENC(LOG, attrs, CACHED),
                                        trace_id, span_id, "haraka.transaction"))

        # metrics
        key = (outcome,)
        self.m_transactions.add(1, res, key)
        self.m_duration.record(max(0, t.end_ns - t.start_ns) / 1e9, res, key)
        if t.size is not None:
            self.m_size.record(t.size, res, key)
        if outcome in ("refused", "deferred") and t.stage not in _RCPT_STAGES:
            self.m_refusals.add(1, res, (t.stage, t.plugin, t.code))

        # Haraka's log lines that waited for this transaction
        if tid in self._lines:
            for line in self._lines.resolve(tid):
                self._emit_line(line, trace_id, span_id)

    def _recipient(self, r, base: dict, trace_id: bytes, span_id: bytes, stage: str | None) -> None:
        red = self.red
        attrs = dict(base)
        red.address("mta.recipient", r.address, red.recipient, attrs)
        reply = red.text(r.reply) if r.reply else None
        attrs.update({"mta.inbound.outcome": r.outcome, "mta.inbound.stage": r.stage, "mta.inbound.plugin": r.plugin,
                      "mta.smtp.code": r.code, "mta.smtp.response": reply,
                      "mta.smtp.enhanced_status": _enhanced(r.reply)})
        dom = attrs.get("mta.recipient.domain")
        body = f"RCPT {r.outcome} {base['haraka.transaction.id']} to {dom or '?'}"
        if r.plugin:
            body += f" by {r.plugin}"
        if r.code:
            body += f": {r.code} {reply or ''}".rstrip()
        self.logs.add(self.res, L.encode_log(r.time_ns, time.time_ns(), _SEVERITY[r.outcome], body,
                                             ENC(LOG, attrs, CACHED), trace_id, span_id, "haraka.rcpt"))
        self.m_recipients.add(1, self.res, (r.outcome, self.top_domain(dom)))
        if r.outcome in ("refused", "deferred"):
            self.m_refusals.add(1, self.res, (r.stage or "rcpt", r.plugin, r.code))

    def _client(self, client: SmtpClient, attrs: dict) -> None:
        red = self.red
        red.value("mta.client.address", client.ip, red.client, attrs)
        red.value("mta.client.host", client.host, red.client, attrs)
        red.value("mta.client.helo", client.helo, red.client, attrs)
        red.value("mta.user", client.auth_user, red.user, attrs)

    # -- connections ----------------------------------------------------------------
    def _connection(self, c: InboundConnection) -> None:
        res = self.res
        self.m_connections.add(1, res, (c.outcome,))
        if not c.refusals:
            return
        attrs = {"haraka.connection.id": c.connection_id, "mta.transport": transport(c.client)}
        self._client(c.client, attrs)
        who = attrs.get("mta.client.address") or attrs.get("mta.client.address_hash")
        for refusal in c.refusals:
            reply = self.red.text(refusal.reply) if refusal.reply else None
            rec = dict(attrs)
            rec.update({"mta.inbound.outcome": "refused" if refusal.code and refusal.code >= 500 else "deferred",
                        "mta.inbound.stage": refusal.stage, "mta.inbound.plugin": refusal.plugin,
                        "mta.smtp.code": refusal.code, "mta.smtp.response": reply,
                        "mta.smtp.enhanced_status": _enhanced(refusal.reply)})
            body = f"{refusal.stage.upper()} refused {c.connection_id}"
            if who:
                body += f" from {who}"
            if refusal.plugin:
                body += f" by {refusal.plugin}"
            if refusal.code:
                body += f": {refusal.code} {reply or ''}".rstrip()
            self.logs.add(res, L.encode_log(refusal.time_ns, time.time_ns(), L.WARN, body, ENC(LOG, rec, CACHED),
                                            None, None, "haraka.refusal"))
            self.m_refusals.add(1, res, (refusal.stage, refusal.plugin, refusal.code))

    # -- Haraka as a relay ---------------------------------------------------------------
    def _relay(self, a: RelayAttempt) -> None:
        red, res = self.red, self.res
        action, outcome, severity = _RELAY[a.outcome]
        txn = transaction_of(a.queue_id)
        mid = self.corr.normalize(a.message_id)
        known = self._traces.get(txn)
        if mid:
            trace_id = self.corr.trace_for_key("mid:" + mid)
        elif known is not None:
            trace_id = known[0]     # the inbound transaction said (it read the Message-ID Haraka added)
        else:
            trace_id = self.corr.trace_for_key("qid:" + txn.strip(ids.WS))
        defcount = a.attempt + 1 if action == "DEFERRED" else 0
        span_id = ids.relay_attempt_span_id(a.queue_id, a.end_ns // 1_000_000, action, defcount)
        first = a.recipients[0] if a.recipients else (None, None, None, None)
        raw_reply = first[3] or a.reply
        reply = red.text(raw_reply) if raw_reply else None
        code = first[1]
        status = first[2]
        if code is None and a.reply:
            m = re.search(r"\b([245]\d\d)[ -](?:([245]\.\d{1,3}\.\d{1,3}) )?", a.reply)
            if m:
                code, status = int(m.group(1)), status or m.group(2)
        if code is None and a.outcome == "delivered":
            code = 250
        status = status or _enhanced(raw_reply)
        attrs = {"haraka.transaction.id": a.queue_id, "mta.message_id": mid, "mta.delivery.outcome": outcome,
                 "server.address": a.mx, "network.peer.address": a.ip, "mta.smtp.response": reply,
                 "mta.smtp.code": code, "mta.smtp.enhanced_status": status}
        red.address_list("mta.recipient", ",".join(r[0] for r in a.recipients if r[0]), red.recipient, attrs)
        # Haraka queues one entry per destination domain: the recipients' domain, unless recipients are dropped
        dom = (a.domain or None) if red.recipient != "drop" else None
        attrs["mta.recipient.domain"] = dom
        if a.omitted and "mta.recipient.count" in attrs:
            attrs["mta.recipient.count"] += a.omitted
        if action == "DEFERRED":
            attrs["mta.defer.count"] = defcount
        span_extra = {"server.port": a.port, "network.protocol.name": a.mode.lower() if a.mode else None,
                      "tls.established": a.tls, "error.type": "rejected" if action == "REJECTED" else None}
        start = a.start_ns if a.start_ns is not None and a.start_ns <= a.end_ns else a.end_ns
        self.spans.add(res, T.encode_span(trace_id, span_id, ids.inbound_span_id(txn), "delivery",
                                          T.SPAN_KIND_CLIENT, start, a.end_ns, ENC(SPAN, (attrs, span_extra), CACHED),
                                          T.STATUS_ERROR if action == "REJECTED" else 0,
                                          (a.reply or reply) if action == "REJECTED" else None))
        # the log record: like ZoneMTA's delivery lines
        body = f"{action} {a.queue_id} to {dom or '?'}"
        if a.mx:
            body += f" via {a.mx}[{a.ip}]" if a.ip else f" via {a.mx}"
        if a.start_ns is not None:
            body += f" in {max(0, a.end_ns - a.start_ns) // 1_000_000} ms"
        if action == "DEFERRED":
            body += f" (deferral {defcount})"
        if reply:
            body += f": {code} {reply}" if code and not reply.startswith(str(code)) else f": {reply}"
        log_only = {}
        if action == "DEFERRED" and a.retry_in_s is not None:
            log_only["mta.defer.next_attempt"] = datetime.fromtimestamp(
                a.end_ns / 1e9 + a.retry_in_s, timezone.utc).isoformat(timespec="seconds")
        self.logs.add(res, L.encode_log(a.end_ns, time.time_ns(), severity, body, ENC(LOG, (attrs, log_only), CACHED),
                                        trace_id, span_id, "haraka." + a.outcome))
        self.m_attempts.add(1, res, (None, outcome, None, None, self.top_domain(dom)))
        if a.start_ns is not None:
            self.m_attempt_duration.record(max(0, a.end_ns - a.start_ns) / 1e9, res, (None, outcome))
        # the recipients Haraka delivered or bounced: the message's outcome once they were the last
        if action != "DEFERRED" and self.finals.table:
            n_final = len(a.recipients) + a.omitted
            if n_final:
                self.finals.outcome(txn, None, outcome, a.end_ns, n_final)

    # -- Haraka's own log lines -------------------------------------------------------------
    def _log_line(self, line: LogLine) -> None:
        tid = line.attributes.get("haraka.transaction.id")
        if tid:
            known = self._traces.get(tid) or self._traces.get(transaction_of(tid))
            if known is not None:
                self._emit_line(line, *known)
                return
            if self._lines.hold(tid, line):
                return
        self._emit_line(line, None, None)

    def _emit_line(self, line: LogLine, trace_id: bytes | None, span_id: bytes | None) -> None:
        body = self.red.text(line.body)
        if self.red.client != "full":
            body = mask_client(body)
        self.logs.add(self.res, L.encode_log(line.time_ns, line.observed_ns, line.severity_number, body,
                                             ENC(LOG, line.attributes, CACHED), trace_id, span_id, line.event_name,
                                             line.severity_text))


def _ip_literal(m: re.Match) -> str:
    token = m.group(0)
    candidates = [token]
    if token.count(":") == 1:          # 192.0.2.7:25
        candidates.append(token.rsplit(":", 1)[0])
    for c in candidates:
        try:
            ipaddress.ip_address(c)
        except ValueError:
            continue
        return "***" + token[len(c):]
    return token


def mask_client(text: str) -> str:
    """Client identifiers in a Haraka log line: its ip=, rdns=, helo= values
    and IP address literals become *** (best effort: what Haraka's own lines
    hold; a plugin may log a client identifier in other words)."""
    if "=" in text:
        text = _CLIENT_KEYS.sub(r"\1=***", text)
    if "." in text or ":" in text:
        text = _IP_CANDIDATE.sub(_ip_literal, text)
    return text
