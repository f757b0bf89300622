"""Which trace a mail event belongs to, and whether we have seen it before.

Trace ids come from the message's Message-ID, else its queue id (ids.py). Many
ZoneMTA entries carry only the queue id, so QUEUED entries (and the plugin's
message.headers events) teach a bounded queue-id -> Message-ID index.
"""
from __future__ import annotations

from otel_mta import ids
from otel_mta.model import MailEvent


class BoundedMap:
    """A dict that forgets its oldest keys beyond `capacity` (FIFO, O(1))."""

    __slots__ = ("_data", "capacity", "evicted")

    def __init__(self, capacity: int):
        self._data: dict = {}
        self.capacity = capacity
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key) -> bool:
        return key in self._data

    def get(self, key, default=None):
        return self._data.get(key, default)

    def put(self, key, value) -> None:
        data = self._data
        if key not in data and len(data) >= self.capacity:
            del data[next(iter(data))]
            self.evicted += 1
        data[key] = value

    def pop(self, key, default=None):
        return self._data.pop(key, default)


class Correlator:
    def __init__(self, index_size: int = 100_000):
        self.index = BoundedMap(index_size)   # queue id -> normalised Message-ID

    def learn(self, queue_id: str | None, message_id: str | None) -> None:
        mid = ids.normalize_message_id(message_id)
        if queue_id and mid:
            self.index.put(queue_id, mid)

    def message_id(self, event: MailEvent) -> str | None:
        """The normalised Message-ID of the event's message, if known."""
        entry = event.entry
        if event.action == "QUEUED" or event.action == "NOQUEUE":
            mid = ids.normalize_message_id(entry.get("message-id"))
            if mid:
                return mid
        else:
            # delivery entries: `messageId: delivery.messageId || delivery.id`
            # (sender.js), so it is the queue id when ZoneMTA had no Message-ID
            value = entry.get("messageId")
            if type(value) is str and value != event.queue_id:
                mid = ids.normalize_message_id(value)
                if mid:
                    return mid
        return self.index.get(event.queue_id)

    def trace_id(self, event: MailEvent) -> tuple[bytes | None, bool]:
        """(trace id, resolved by Message-ID?)"""
        mid = self.message_id(event)
        if mid is not None:
            return ids.trace_id_for(mid, None), True
        return ids.trace_id_for(None, event.queue_id), False


class Deduplicator:
    """Drops the second copy of an entry that arrived on two channels.

    Only used when more than one mail channel is enabled (remote log and the
    plugin's events see the same ZoneMTA entries).
    """

    def __init__(self, window: int = 200_000):
        self._seen = BoundedMap(window)
        self.dropped = 0

    def first_time(self, event: MailEvent) -> bool:
        key = event.identity()
        if key in self._seen:
            self.dropped += 1
            return False
        self._seen.put(key, True)
        return True
