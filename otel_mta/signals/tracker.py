"""The message's root span, and its final outcome when that comes later.

At QUEUED we know the trace, the start and how many recipients there are. The
root span is emitted when every recipient has a final outcome (delivered,
rejected, dropped, deleted) and ends then. Deferred mail can retry for days, so
a root is never held for that: at a recipient's first deferral — or after
`max_hold_s`, or when the table is full, or at shutdown — the root is emitted
with `mta.message.state=queued`, and later attempts still join the trace
because their parent id is derived from the queue id (docs/trace-ids.md).

Such a message is then remembered in `QueuedMessages` (no span is held open:
counts, a bit per recipient and the QUEUED time, packed in ~40 bytes), and when
its last recipient reaches a final outcome a `message.final` span, child of
the root, records the message's state, its time in the queue and its
recipients by outcome. That table is bounded: when full, the oldest message is
forgotten and counted, and a forgotten message's outcome emits no
`message.final` span. It lives in memory only: after a sidecar restart the
messages queued before it get no `message.final` span either
(docs/remote-log.md, "The message's root span").
"""
from __future__ import annotations

import struct
from collections import OrderedDict

from otel_mta import ids
from otel_mta.signals import traces as T
from otel_mta.signals.fields import pick

_STATE = {s: {"mta.message.state": s} for s in ("delivered", "partially_delivered", "bounced", "dropped", "queued")}
# the message's state when its only recipient had this outcome (what final() works out for many)
_ONE_RECIPIENT = {"delivered": "delivered", "rejected": "bounced", "dropped": "dropped", "deleted": "dropped"}
_ROOT_ATTRS = ("mta.queue_id", "mta.message_id", "mta.interface", "mta.sender.domain",
               "mta.recipient.domain", "mta.recipient.count", "mta.message.size")
_STATE_KEY = {s: (s,) for s in _STATE}   # time-in-queue metric attribute values, made once
_REJECTED_MSG = "one or more recipients rejected"


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
    """Messages whose root span ended while a recipient was still queued:
    queue id -> packed (trace id, QUEUED time, recipients, delivered, rejected,
    dropped) + one bit per recipient already final, so that an outcome reported
    twice (remote log and the plugin's queue.release) counts once.

    Bounded by `capacity`; when full the oldest (first to have entered) is
    forgotten and counted in `evicted`. An OrderedDict, not a dict: finding a
    plain dict's first key gets slow once many keys before it were deleted,
    and here they are deleted in any order. ~230 bytes a message of up to 64
    recipients, table included (tests/test_tracker.py measures it)."""

    HEAD = struct.Struct("<16sqIIII")

    __slots__ = ("capacity", "evicted", "_data")

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.evicted = 0
        self._data: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, queue_id) -> bool:
        return queue_id in self._data

    def add(self, queue_id: str, trace_id: bytes, start_ns: int, expected: int, outcomes: dict | None) -> None:
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
        if queue_id not in data and len(data) >= self.capacity:
            data.popitem(last=False)
            self.evicted += 1
        data[queue_id] = self.HEAD.pack(trace_id, start_ns, expected, delivered, rejected, dropped) + mask

    def final(self, queue_id: str, seq: str | None, outcome: str):
        """Count a recipient's final outcome. When it was the last one, forget
        the message and return (trace id, QUEUED time, recipients, delivered,
        rejected, dropped); else None."""
        value = self._data.get(queue_id)
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
            if outcome == "delivered":
                delivered += 1
            elif outcome == "rejected":
                rejected += 1
            else:
                dropped += 1
        if delivered + rejected + dropped >= expected:
            del self._data[queue_id]
            return trace_id, start_ns, expected, delivered, rejected, dropped
        # an existing key keeps its place: the order stays that of entering the table
        self._data[queue_id] = self.HEAD.pack(trace_id, start_ns, expected, delivered, rejected, dropped) + mask
        return None


class _Root:
    __slots__ = ("trace_id", "span_id", "start_ns", "deadline_ns", "expected", "outcomes", "attrs")

    def __init__(self, trace_id, span_id, start_ns, deadline_ns, expected, attrs):
        self.trace_id = trace_id
        self.span_id = span_id
        self.start_ns = start_ns
        self.deadline_ns = deadline_ns
        self.expected = expected
        self.outcomes: dict | None = None  # seq -> outcome, made for messages of several recipients
        self.attrs = attrs


class MessageTracker:
    def __init__(self, spans, resource, capacity: int = 100_000, max_hold_s: float = 600.0,
                 metrics=None, own_resource=None, queued_capacity: int = 100_000):
        self._spans = spans
        self._res = resource
        self.capacity = capacity
        self.max_hold_ns = int(max_hold_s * 1e9)
        # ordered: when full, the oldest root goes first (finding a plain dict's
        # first key gets slow once many keys before it were deleted)
        self._open: OrderedDict[str, _Root] = OrderedDict()
        self.evicted = 0   # roots ended early (as queued) because `capacity` were open
        self.queued_messages = QueuedMessages(queued_capacity)
        self._time_in_queue = None
        if metrics is not None:
            self._time_in_queue = metrics.histogram("mta.message.time_in_queue").record
            size = metrics.gauge("otelmta_tracker_queued_messages")
            evicted = metrics.counter("otelmta_tracker_evicted_messages")
            metrics.before_collect(lambda: (size.set(len(self.queued_messages), own_resource),
                                            evicted.observe(self.queued_messages.evicted, own_resource)))

    def __len__(self) -> int:
        return len(self._open)

    def queued(self, queue_id: str, trace_id: bytes | None, start_ns: int, attrs: dict,
               recipients: int, span_id: bytes | None = None) -> None:
        """A message was queued; `span_id` is its root span id if already known."""
        if trace_id is None:
            return
        if len(self._open) >= self.capacity:
            oldest = next(iter(self._open))
            self._end(oldest, self._open[oldest].start_ns, "queued")
            self.evicted += 1
        root_attrs = pick(attrs, _ROOT_ATTRS)  # None values are not encoded
        self._open[queue_id] = _Root(trace_id, span_id or ids.root_span_id(queue_id), start_ns,
                                     start_ns + self.max_hold_ns, max(recipients, 1), root_attrs)

    def final(self, queue_id: str, seq: str | None, outcome: str, time_ns: int) -> None:
        """A recipient's final outcome (`seq` None with "deleted": the whole message)."""
        root = self._open.get(queue_id)
        if root is None:
            if self.queued_messages:
                self._final_later(queue_id, seq, outcome, time_ns)
            return
        outcomes = root.outcomes
        if outcomes is None:
            if root.expected == 1:  # most messages: one recipient, one outcome
                self._end(queue_id, time_ns, _ONE_RECIPIENT[outcome], error=outcome == "rejected")
                return
            outcomes = root.outcomes = {}
        if seq is None and outcome == "deleted":
            for n in range(1, root.expected + 1):   # every recipient not final yet is gone
                outcomes.setdefault(f"{n:03x}", "deleted")
        else:
            outcomes[seq] = outcome
        if len(outcomes) >= root.expected:
            values = list(outcomes.values())
            delivered, rejected = values.count("delivered"), values.count("rejected")
            self._end(queue_id, time_ns, message_state(delivered, rejected, len(values) - delivered - rejected),
                      error=rejected > 0)

    def deferred(self, queue_id: str, time_ns: int) -> None:
        if queue_id in self._open:
            self._end(queue_id, time_ns, "queued")

    def expire(self, now_ns: int, flush_all: bool = False) -> None:
        for qid in [q for q, r in self._open.items() if flush_all or r.deadline_ns <= now_ns]:
            root = self._open[qid]
            self._end(qid, min(now_ns, root.deadline_ns), "queued")

    def _end(self, queue_id: str, end_ns: int, state: str, error: bool = False) -> None:
        root = self._open.pop(queue_id)
        end_ns = max(end_ns, root.start_ns)
        record = T.encode_span(root.trace_id, root.span_id, None, "message",
                               T.SPAN_KIND_SERVER, root.start_ns, end_ns,
                               (root.attrs, _STATE[state]), T.STATUS_ERROR if error else 0,
                               _REJECTED_MSG if error else None)
        self._spans.add(self._res, record)
        if state == "queued":
            self.queued_messages.add(queue_id, root.trace_id, root.start_ns, root.expected, root.outcomes)
        elif self._time_in_queue is not None:
            self._time_in_queue((end_ns - root.start_ns) / 1e9, self._res, _STATE_KEY[state])

    def _final_later(self, queue_id: str, seq: str | None, outcome: str, time_ns: int) -> None:
        """A final outcome of a message whose root ended before: the message-level
        `message.final` span once it was the last recipient's."""
        done = self.queued_messages.final(queue_id, seq, outcome)
        if done is None:
            return
        trace_id, start_ns, expected, delivered, rejected, dropped = done
        state = message_state(delivered, rejected, dropped)
        end_ns = max(time_ns, start_ns)
        error = rejected > 0
        attrs = {"mta.queue_id": queue_id, "mta.recipient.count": expected,
                 "mta.message.time_in_queue_ms": (end_ns - start_ns) // 1_000_000,
                 "mta.recipients.delivered": delivered, "mta.recipients.rejected": rejected,
                 "mta.recipients.dropped": dropped}
        self._spans.add(self._res, T.encode_span(
            trace_id, ids.final_span_id(queue_id), ids.root_span_id(queue_id), "message.final",
            T.SPAN_KIND_INTERNAL, start_ns, end_ns, (attrs, _STATE[state]),
            T.STATUS_ERROR if error else 0, _REJECTED_MSG if error else None))
        if self._time_in_queue is not None:
            self._time_in_queue((end_ns - start_ns) / 1e9, self._res, _STATE_KEY[state])
