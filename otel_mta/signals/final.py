"""A message's final outcome when it comes after the span that started its
trace ended: the `message.final` span and the time-in-queue metric, for every
producer whose messages wait in a queue.

- ZoneMTA (signals/tracker.py): the root span `message` ends at a recipient's
  first deferral (mail can wait for days); the message then waits here until
  its last recipient is delivered, rejected or dropped.
- Haraka relaying with its own outbound queue (signals/inbound.py): the
  `inbound` SERVER span ends when Haraka queues the message, before any
  delivery, so every message Haraka queues for delivery waits here until its
  last recipient is delivered or bounced.

Both keep what they need in one bounded table, `QueuedMessages` (made once by
the pipeline and shared); each has its own `MessageFinal`, which knows that
producer's resource, id attribute and parent span.
"""
from __future__ import annotations

import struct
from collections import OrderedDict

from otel_mta import ids
from otel_mta.signals import traces as T

STATES = ("delivered", "partially_delivered", "bounced", "dropped", "queued")
STATE_ATTRS = {s: {"mta.message.state": s} for s in STATES}
STATE_KEY = {s: (s,) for s in STATES}   # time-in-queue metric attribute values, made once
REJECTED_MSG = "one or more recipients rejected"


def message_state(delivered: int, rejected: int, dropped: int) -> str:
    """The message's final state from its recipients' outcomes (deleted counts as dropped)."""
    if delivered and not rejected and not dropped:
        return "delivered"
    if delivered:
        return "partially_delivered"
    return "bounced" if rejected else "dropped"


def _seq_index(seq) -> int | None:
    """ZoneMTA numbers a message's recipients 1, 2, ... in hex ("001"): the 0-based index."""
    try:
        return int(seq, 16) - 1
    except (TypeError, ValueError):
        return None


class QueuedMessages:
    """Messages waiting for their last recipient's final outcome: key (a
    ZoneMTA queue id, a Haraka transaction uuid) -> packed (trace id, queued
    time, recipients, delivered, rejected, dropped) + one bit per recipient
    already final, so that an outcome reported twice with its ZoneMTA sequence
    (remote log and the plugin's queue.release) counts once.

    Bounded by `capacity`; when full the oldest (first to have entered) is
    forgotten and counted in `evicted`. An OrderedDict, not a dict: finding a
    plain dict's first key gets slow once many keys before it were deleted,
    and here they are deleted in any order. ~230 bytes a message of up to 64
    recipients, table included (tests/test_message_final.py measures it)."""

    HEAD = struct.Struct("<16sqIIII")

    __slots__ = ("capacity", "evicted", "_data")

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.evicted = 0
        self._data: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key) -> bool:
        return key in self._data

    def add(self, key: str, trace_id: bytes, start_ns: int, expected: int, outcomes: dict | None = None) -> None:
        """Remember a message of `expected` recipients, queued at `start_ns`;
        `outcomes` ({ZoneMTA seq: outcome}) are those final already."""
        delivered = rejected = dropped = 0
        mask = bytearray((expected + 7) >> 3)
        for seq, outcome in (outcomes or {}).items():
            n = _seq_index(seq)
            if n is not None and 0 <= n < expected:
                mask[n >> 3] |= 1 << (n & 7)
            if outcome == "delivered":
                delivered += 1
            elif outcome == "rejected":
                rejected += 1
            else:
                dropped += 1
        data = self._data
        if key not in data and len(data) >= self.capacity:
            data.popitem(last=False)
            self.evicted += 1
        data[key] = self.HEAD.pack(trace_id, start_ns, expected, delivered, rejected, dropped) + mask

    def final(self, key: str, seq: str | None, outcome: str, count: int = 1):
        """Count final outcomes: one recipient's, known by its ZoneMTA `seq`
        (counted once); or `count` recipients' without one (Haraka reports
        each recipient's final outcome once); or, with `seq` None and
        "deleted", every recipient not final yet (the whole message is gone).
        When that was the last recipient, forget the message and return
        (trace id, queued time, recipients, delivered, rejected, dropped);
        else None."""
        value = self._data.get(key)
        if value is None:
            return None
        trace_id, start_ns, expected, delivered, rejected, dropped = self.HEAD.unpack_from(value)
        mask = bytearray(value[self.HEAD.size:])
        if seq is None and outcome == "deleted":   # the whole message is gone (ZoneMTA: body not found)
            dropped = max(expected - delivered - rejected, dropped)
        else:
            n = _seq_index(seq)
            if n is not None and 0 <= n < expected:
                bit = 1 << (n & 7)
                if mask[n >> 3] & bit:
                    return None                     # that recipient was counted already
                mask[n >> 3] |= bit
                count = 1
            if outcome == "delivered":
                delivered += count
            elif outcome == "rejected":
                rejected += count
            else:
                dropped += count
        if delivered + rejected + dropped >= expected:
            del self._data[key]
            return trace_id, start_ns, expected, delivered, rejected, dropped
        # an existing key keeps its place: the order stays that of entering the table
        self._data[key] = self.HEAD.pack(trace_id, start_ns, expected, delivered, rejected, dropped) + mask
        return None

    def observe(self, metrics, own_resource) -> None:
        """Report the table's size and evictions (the sidecar's own metrics) at each collection."""
        size = metrics.gauge("otelmta_tracker_queued_messages")
        evicted = metrics.counter("otelmta_tracker_evicted_messages")
        metrics.before_collect(lambda: (size.set(len(self), own_resource),
                                        evicted.observe(self.evicted, own_resource)))


class MessageFinal:
    """One producer's `message.final` spans: a child of `parent_span_id(key)`
    (ZoneMTA: the root span; Haraka: the inbound span) in the message's
    trace, from its queued time to its last recipient's final outcome, with
    the message's state, time in queue and recipients by outcome; and the
    mta.message.time_in_queue metric."""

    __slots__ = ("table", "_spans", "_res", "_id_key", "_parent", "_time_in_queue")

    def __init__(self, table: QueuedMessages, spans, resource, id_key: str, parent_span_id, metrics=None):
        self.table = table
        self._spans = spans
        self._res = resource
        self._id_key = id_key            # the attribute naming the message: mta.queue_id, haraka.transaction.id
        self._parent = parent_span_id    # key -> the span id message.final is a child of
        self._time_in_queue = metrics.histogram("mta.message.time_in_queue").record if metrics is not None else None

    def waiting(self, key: str, trace_id: bytes, start_ns: int, expected: int, outcomes: dict | None = None) -> None:
        """The message was queued at `start_ns` and some recipient has no final outcome yet."""
        self.table.add(key, trace_id, start_ns, expected, outcomes)

    def outcome(self, key: str, seq: str | None, outcome: str, time_ns: int, count: int = 1) -> None:
        """Final outcomes of recipients (QueuedMessages.final); message.final once they were the last."""
        done = self.table.final(key, seq, outcome, count)
        if done is None:
            return
        trace_id, start_ns, expected, delivered, rejected, dropped = done
        state = message_state(delivered, rejected, dropped)
        end_ns = max(time_ns, start_ns)
        error = rejected > 0
        attrs = {self._id_key: key, "mta.recipient.count": expected,
                 "mta.message.time_in_queue_ms": (end_ns - start_ns) // 1_000_000,
                 "mta.recipients.delivered": delivered, "mta.recipients.rejected": rejected,
                 "mta.recipients.dropped": dropped}
        self._spans.add(self._res, T.encode_span(
            trace_id, ids.final_span_id(key), self._parent(key), "message.final",
            T.SPAN_KIND_INTERNAL, start_ns, end_ns, (attrs, STATE_ATTRS[state]),
            T.STATUS_ERROR if error else 0, REJECTED_MSG if error else None))
        if self._time_in_queue is not None:
            self._time_in_queue((end_ns - start_ns) / 1e9, self._res, STATE_KEY[state])
