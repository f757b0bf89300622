"""The latest SMTP reply a recipient domain gave, for `otel-mta top` (otel_mta/status.py).

Keyed by the recipient domain as the metrics carry it (top-N, the rest
`other`: privacy.py TopN), so the keys are few and match the domains that
`mta.delivery.attempts` counts. The reply is the log record's
`mta.smtp.response`: addresses already masked by the privacy settings.
"""
from __future__ import annotations


class LastReplies:
    __slots__ = ("capacity", "_data")

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._data: dict = {}   # domain -> (outcome, reply, time_ns)

    def __len__(self) -> int:
        return len(self._data)

    def put(self, domain: str | None, outcome: str, reply: str | None, time_ns: int) -> None:
        if domain is None or reply is None:
            return
        data = self._data
        if domain not in data and len(data) >= self.capacity:
            # rare (the top-N set changed a lot): forget the first half; a domain
            # still failing comes back with its next reply
            for key in list(data)[: len(data) // 2]:
                del data[key]
        data[domain] = (outcome, reply, time_ns)

    def get(self, domain: str):
        """(outcome, reply, time_ns) or None."""
        return self._data.get(domain)
