"""Which trace a mail event belongs to, and whether we have seen it before.

Trace ids come from the message's Message-ID, else its queue id (ids.py). Many
ZoneMTA entries carry only the queue id, so QUEUED entries (and the plugin's
message.headers events) teach a bounded queue-id -> Message-ID index; Haraka's
transactions teach it their transaction uuids too, so that `otel-mta trace-id`
(lookup()) finds a message from the id an MTA's own logs show.

Trust (docs/trace-ids.md): only the remote log and the plugins' events write
that index. GELF is unauthenticated UDP, so what a GELF message says about a
queue id goes into a separate table of hints that only GELF records read: a
GELF sender can mislabel its own records, never move ZoneMTA's deliveries
into another trace.
"""
from __future__ import annotations

import collections
import functools
from collections import OrderedDict

from otel_mta import ids
from otel_mta.model import MailEvent


class BoundedMap:
    """A dict that forgets its oldest keys beyond `capacity` (FIFO, O(1)).

    An OrderedDict, not a dict: finding a plain dict's first key walks over the
    slots of every key deleted before it, so evicting from the front of a full
    100,000-key dict cost ~80 us per insert.
    """

    __slots__ = ("_data", "capacity", "evicted", "get", "pop")

    def __init__(self, capacity: int):
        self._data: OrderedDict = OrderedDict()
        self.capacity = capacity
        self.evicted = 0
        # the dict's own methods: several lookups per entry, without a Python call each
        self.get = self._data.get
        self.pop = self._data.pop

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key) -> bool:
        return key in self._data

    def put(self, key, value) -> None:
        data = self._data
        if key not in data and len(data) >= self.capacity:
            data.popitem(last=False)
            self.evicted += 1
        data[key] = value


_MISSING = object()


class GenerationalMap:
    """A big map that forgets its oldest keys: at most `capacity` keys, at
    least the latest capacity/2. Two plain dicts; when the newer one is half
    the capacity, the older is dropped whole. Per key that is ~30 bytes of
    table instead of an OrderedDict's ~140 (measured with tracemalloc: the
    queue-id index at 50,000 keys took 8.5 MiB as an OrderedDict)."""

    __slots__ = ("capacity", "evicted", "_new", "_old")

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.evicted = 0
        self._new: dict = {}
        self._old: dict = {}

    def __len__(self) -> int:
        return len(self._new) + len(self._old)

    def __contains__(self, key) -> bool:
        return key in self._new or key in self._old

    def get(self, key, default=None):
        value = self._new.get(key, _MISSING)
        return self._old.get(key, default) if value is _MISSING else value

    def put(self, key, value) -> None:
        new = self._new
        if key not in new:
            if self._old:
                self._old.pop(key, None)
            if len(new) >= (self.capacity + 1) // 2:
                self.evicted += len(self._old)
                self._old, new = new, {}
                self._new = new
        new[key] = value


def _message_trace(raw: str) -> tuple[bytes | None, str | None]:
    """(trace id, normalised) of a raw Message-ID, or (None, None)."""
    mid = ids.normalize_message_id(raw)
    return (ids.trace_id_from_key("mid:" + mid), mid) if mid else (None, None)


class Correlator:
    """Trace ids for mail events. The ids are pure functions of their inputs,
    so the lookups below are memoised with functools.lru_cache (bounded, and a
    hit runs in C with no Python call); a message has several entries and log
    lines (QUEUED, then one per recipient and attempt). Only the queue-id index
    is state. Callers pass only str to the memos (lists are not hashable)."""

    def __init__(self, index_size: int = 100_000):
        # queue id (or Haraka transaction uuid) -> normalised Message-ID, or "" when
        # the message has none (it is traced by that id); trusted sources only
        self.index = GenerationalMap(index_size)
        self.hints = GenerationalMap(index_size)  # the same, as GELF messages claim it (read by GELF only)
        self._known = functools.lru_cache(maxsize=4096)(_message_trace)
        self._normalize = functools.lru_cache(maxsize=4096)(ids.normalize_message_id)
        self.root_span_id = functools.lru_cache(maxsize=4096)(ids.root_span_id)
        self._trace_for_key = functools.lru_cache(maxsize=8192)(ids.trace_id_from_key)

    def normalize(self, raw) -> str | None:
        return self._normalize(raw) if type(raw) is str else None

    def learn(self, queue_id: str | None, message_id: str | None) -> None:
        """The message `queue_id` has this Message-ID (raw; None or "<>": it has none)."""
        # _known: resolve() of this message's entries finds it there next
        mid = self._known(message_id)[1] if type(message_id) is str else None
        if queue_id:
            self.index.put(queue_id, mid or "")

    def hint(self, queue_id: str, mid: str) -> None:
        """A GELF message said `queue_id` belongs to the (normalised) `mid`:
        noted for other GELF records, unless a trusted source knows better."""
        if queue_id not in self.index:
            self.hints.put(queue_id, mid)

    def untrusted_message_id(self, queue_id: str) -> str | None:
        """The Message-ID of a queue id for a GELF record: what the trusted
        sources established, else what GELF messages claimed."""
        mid = self.index.get(queue_id)
        if mid is not None:
            return mid or None    # "": a trusted source saw it without a Message-ID
        return self.hints.get(queue_id)

    def message_id(self, event: MailEvent) -> str | None:
        """The normalised Message-ID of the event's message, if known."""
        entry = event.entry
        if event.action == "QUEUED" or event.action == "NOQUEUE":
            mid = self.normalize(entry.get("message-id"))
            if mid:
                return mid
        else:
            # delivery entries: `messageId: delivery.messageId || delivery.id`
            # (sender.js), so it is the queue id when ZoneMTA had no Message-ID
            value = entry.get("messageId")
            if type(value) is str and value != event.queue_id:
                mid = self.normalize(value)
                if mid:
                    return mid
        return self.index.get(event.queue_id) or None

    def resolve(self, event: MailEvent) -> tuple[bytes | None, str | None]:
        """(trace id, normalised Message-ID or None when traced by queue id).

        The same as message_id() then trace_for_key(), in one call with one
        cache lookup for an entry that carries its Message-ID (most do): this
        runs for every entry."""
        entry = event.entry
        if event.action == "QUEUED" or event.action == "NOQUEUE":
            raw = entry.get("message-id")
        else:
            raw = entry.get("messageId")  # the queue id when ZoneMTA had no Message-ID (see message_id())
            if raw == event.queue_id:
                raw = None
        if type(raw) is str:
            known = self._known(raw)
            if known[1] is not None:
                return known
        mid = self.index.get(event.queue_id)
        if mid:     # "": known to have no Message-ID
            return self._trace_for_key("mid:" + mid), mid
        qid = event.queue_id.strip(ids.WS)
        if not qid:
            return None, None
        return self._trace_for_key("qid:" + qid), None

    def trace_for_key(self, key: str) -> bytes:
        """The trace id of a `mid:<normalised Message-ID>` or `qid:<queue id>`
        key (memoised). From the key, not trace_id_for(mid): `mid` is
        normalised already, and normalising twice is not always the same as
        once ("< <a@b> >")."""
        return self._trace_for_key(key)

    def trace_id(self, event: MailEvent) -> bytes | None:
        return self.resolve(event)[0]

    def lookup(self, queue_id: str) -> tuple[bytes, bool] | None:
        """(trace id, whether it comes from a Message-ID) of a message the index
        knows by its ZoneMTA queue id or Haraka transaction uuid, else None."""
        mid = self.index.get(queue_id)
        if mid is None:
            return None
        if mid:
            return self._trace_for_key("mid:" + mid), True
        return self._trace_for_key("qid:" + queue_id.strip(ids.WS)), False


class HashWindow:
    """The last `size` keys seen, to drop repeats. Kept as 64-bit hashes (a set
    and a FIFO of ints, ~90 bytes per key, half of what the keys themselves in
    an ordered dict take); two keys sharing a hash inside the window is a
    ~1e-10 chance at 100,000 keys."""

    __slots__ = ("size", "_set", "_order")

    def __init__(self, size: int):
        self.size = size
        self._set: set = set()
        self._order: collections.deque = collections.deque()

    def __len__(self) -> int:
        return len(self._order)

    def seen(self, key) -> bool:
        """True if the key is in the window; otherwise remember it."""
        h = hash(key)
        s = self._set
        if h in s:
            return True
        s.add(h)
        order = self._order
        order.append(h)
        if len(order) > self.size:
            s.discard(order.popleft())
        return False


class Deduplicator:
    """Drops the second copy of an entry that arrived on two channels.

    Only used when more than one mail channel is enabled (remote log and the
    plugin's events see the same ZoneMTA entries). The window is counted in
    entries: 100,000 is 20 s at 5,000 entries/s, far more than the plugin's
    batches lag behind the remote log's datagrams.
    """

    def __init__(self, window: int = 100_000):
        self._seen = HashWindow(window)
        self.dropped = 0

    def first_time(self, event: MailEvent) -> bool:
        if self._seen.seen(event.identity()):
            self.dropped += 1
            return False
        return True
