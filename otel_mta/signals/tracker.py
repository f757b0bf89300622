"""The message's root span, and its final outcome when that comes later.

At QUEUED we know the trace, the start and how many recipients there are. The
root span is emitted when every recipient has a final outcome (delivered,
rejected, dropped, deleted) and ends then. Deferred mail can retry for days, so
a root is never held for that: at a recipient's first deferral — or after
`max_hold_s`, or when the table is full, or at shutdown — the root is emitted
with `mta.message.state=queued`, and later attempts still join the trace
because their parent id is derived from the queue id (docs/trace-ids.md).

Such a message is then remembered in `QueuedMessages` (signals/final.py; no
span is held open: counts, a bit per recipient and the QUEUED time), and when
its last recipient reaches a final outcome a `message.final` span, child of
the root, records the message's state, its time in the queue and its
recipients by outcome. That table is bounded: when full, the oldest message is
forgotten and counted, and a forgotten message's outcome emits no
`message.final` span. It lives in memory only: after a sidecar restart the
messages queued before it get no `message.final` span either
(docs/remote-log.md, "The message's root span").
"""
from __future__ import annotations

from collections import OrderedDict

from otel_mta import ids
from otel_mta.signals import traces as T
from otel_mta.signals.fields import pick
from otel_mta.signals.final import REJECTED_MSG, STATE_ATTRS, STATE_KEY, MessageFinal, QueuedMessages, message_state

# the message's state when its only recipient had this outcome (what final() works out for many)
_ONE_RECIPIENT = {"delivered": "delivered", "rejected": "bounced", "dropped": "dropped", "deleted": "dropped"}
_ROOT_ATTRS = ("mta.queue_id", "mta.message_id", "mta.interface", "mta.sender.domain",
               "mta.recipient.domain", "mta.recipient.count", "mta.message.size")


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
                 metrics=None, own_resource=None, queued_capacity: int = 100_000,
                 queued: QueuedMessages | None = None):
        """`queued`: the table of waiting messages, shared with the other
        mappings (the pipeline makes it and reports its size); without it the
        tracker makes its own of `queued_capacity` and reports it."""
        self._spans = spans
        self._res = resource
        self.capacity = capacity
        self.max_hold_ns = int(max_hold_s * 1e9)
        # ordered: when full, the oldest root goes first (finding a plain dict's
        # first key gets slow once many keys before it were deleted)
        self._open: OrderedDict[str, _Root] = OrderedDict()
        self.evicted = 0   # roots ended early (as queued) because `capacity` were open
        if queued is None:
            queued = QueuedMessages(queued_capacity)
            if metrics is not None:
                queued.observe(metrics, own_resource)
        self.queued_messages = queued
        self.finals = MessageFinal(queued, spans, resource, "mta.queue_id", ids.root_span_id, metrics)
        self._time_in_queue = None
        if metrics is not None:
            self._time_in_queue = metrics.histogram("mta.message.time_in_queue").record

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
                self.finals.outcome(queue_id, seq, outcome, time_ns)
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
                               (root.attrs, STATE_ATTRS[state]), T.STATUS_ERROR if error else 0,
                               REJECTED_MSG if error else None)
        self._spans.add(self._res, record)
        if state == "queued":
            self.finals.waiting(queue_id, root.trace_id, root.start_ns, root.expected, root.outcomes)
        elif self._time_in_queue is not None:
            self._time_in_queue((end_ns - root.start_ns) / 1e9, self._res, STATE_KEY[state])
