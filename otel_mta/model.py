"""The internal event types every source produces and every signal consumes.

- MailEvent: something ZoneMTA did with a message (a remote-log entry, or the
  same entry reported by our ZoneMTA plugin, possibly with delivery phases).
- LogLine: a log line from a producer (GELF from WildDuck, ZoneMTA, Haraka).
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
