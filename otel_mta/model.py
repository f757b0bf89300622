"""The internal event types every source produces and every signal consumes.

- MailEvent: something ZoneMTA did with a message (a remote-log entry, or the
  same entry reported by our ZoneMTA plugin, possibly with delivery phases).
- LogLine: a log line from a producer (GELF from WildDuck, ZoneMTA, Haraka).
- InboundConnection, InboundTransaction (with InboundRecipient, SmtpClient,
  Refusal), RelayAttempt: what an inbound MTA did (the Haraka plugin's events).
Status pollers write samples straight into the metric store (signals/metrics.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field


class MailEvent:
    """One ZoneMTA remote-log entry: `{id, seq?, action, ...data}`.

    `entry` keeps ZoneMTA's own field names (see docs/remote-log.md); the signal
    mappers read from it. `channel` names the source it came in on
    ("remote_log" or "events") for self-telemetry and de-duplication.
    """

    __slots__ = ("action", "queue_id", "seq", "entry", "observed_ns", "channel", "phases")

    def __init__(self, action: str, queue_id: str, seq: str | None, entry: dict,
                 observed_ns: int, channel: str, phases: list | None = None):
        self.action = action
        self.queue_id = queue_id
        self.seq = seq
        self.entry = entry
        self.observed_ns = observed_ns
        self.channel = channel
        self.phases = phases

    @property
    def defcount(self) -> int:
        value = self.entry.get("defcount")
        return int(value) if type(value) in (int, float) else 0

    def identity(self) -> tuple:
        """What makes this entry unique across channels (see docs/trace-ids.md)."""
        return (self.queue_id, self.seq, self.action,
                self.defcount if self.action == "DEFERRED" else 0)

    def __repr__(self) -> str:
        return f"MailEvent({self.action} {self.queue_id}.{self.seq} via {self.channel})"


@dataclass(slots=True)
class Phase:
    """A timed step of one delivery attempt, reported by the plugin."""
    name: str            # connect | tls | smtp
    start_ns: int
    end_ns: int
    attributes: dict = field(default_factory=dict)
    error: str | None = None


@dataclass(slots=True)
class LogLine:
    """A log line from another producer, already mapped to OTLP terms."""
    time_ns: int
    observed_ns: int
    severity_number: int
    severity_text: str
    body: str
    attributes: dict
    service: str                     # resource service.name
    host: str | None = None          # resource host.name (the producing host)
    trace_id: bytes | None = None
    span_id: bytes | None = None
    event_name: str | None = None


# -- inbound SMTP (the Haraka plugin's events, docs/events.md) -------------------
@dataclass(slots=True)
class SmtpClient:
    """Who is on the other end of an inbound SMTP session (personal: privacy.client)."""
    ip: str | None = None
    host: str | None = None          # reverse DNS
    helo: str | None = None
    local_port: int | None = None    # the port it connected to (25, 587...)
    tls: bool = False
    esmtp: bool = False
    relaying: bool = False
    auth_user: str | None = None


@dataclass(slots=True)
class Refusal:
    """An SMTP refusal: at which hook, the reply, and the plugin that refused (None: Haraka itself)."""
    stage: str
    code: int | None
    reply: str | None
    plugin: str | None
    time_ns: int


@dataclass(slots=True)
class InboundRecipient:
    address: str
    outcome: str                     # accepted | refused | deferred | aborted
    time_ns: int
    code: int | None = None
    reply: str | None = None
    stage: str | None = None
    plugin: str | None = None


@dataclass(slots=True)
class InboundTransaction:
    """One SMTP transaction (MAIL FROM to its end) an inbound MTA handled."""
    transaction_id: str
    connection_id: str
    start_ns: int
    end_ns: int
    outcome: str                     # accepted | refused | deferred | aborted
    mail_from: str
    recipients: list                 # [InboundRecipient]
    client: SmtpClient
    code: int | None = None          # the reply that ended it
    reply: str | None = None
    stage: str | None = None         # the hook it ended at
    plugin: str | None = None        # the plugin that refused it
    omitted: dict | None = None      # recipients not listed, by outcome
    message_id: str | None = None
    size: int | None = None
    data_start_ns: int | None = None
    data_end_ns: int | None = None
    outbound_queue: bool = False     # accepted into the MTA's own outbound queue: it delivers the message itself


@dataclass(slots=True)
class InboundConnection:
    connection_id: str
    start_ns: int
    end_ns: int
    outcome: str                     # accepted | refused (at the greeting)
    transactions: int | None
    refusals: list                   # [Refusal] outside transactions
    client: SmtpClient


@dataclass(slots=True)
class RelayAttempt:
    """One delivery attempt of an inbound MTA's own outbound queue (Haraka as a relay)."""
    queue_id: str                    # Haraka: the transaction uuid plus .N per destination domain
    outcome: str                     # delivered | deferred | bounced
    domain: str
    recipients: list                 # [(address, code, status, reply)]
    end_ns: int
    start_ns: int | None = None
    queued_ns: int | None = None
    attempt: int = 0                 # deferrals before this attempt
    message_id: str | None = None
    mx: str | None = None
    ip: str | None = None
    port: int | None = None
    mode: str | None = None
    tls: bool | None = None
    reply: str | None = None
    retry_in_s: int | None = None
    omitted: int = 0
