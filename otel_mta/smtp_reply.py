"""SMTP replies reduced to their kind, so that replies that differ only in
per-message detail (session ids, timestamps, addresses, IPs) group together.

    451-4.7.1 Try again in 300 s [mx3.example.net 1706712345 a1b2c3d4e5f6]
    -> 451 4.7.1 Try again in 300 s [mx3.example.net <id> <id>]

Used where a reply becomes a metric attribute (the queue's last error per
destination, sources/mongodb.py), so its series stay few. The Queues and
Outbound dashboards' ClickHouse SQL applies the same rules to log records
(monitoring/dashboards/sql.py; tests/monitoring checks that both agree).
Addresses are masked first by the privacy policy (privacy.Redactor.text).
"""
from __future__ import annotations

import re

MAX_LEN = 200

# (pattern, replacement), applied in this order. Only what Python's re and
# RE2 (ClickHouse's replaceRegexpAll) read alike: no look-arounds.
RULES: tuple[tuple[str, str], ...] = (
    (r"^(\d{3})-", r"\1 "),                        # multi-line marker: "451-4.7.1" -> "451 4.7.1"
    (r"\s+", " "),                                  # line breaks and runs of blanks
    (r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b", "<ip>"),  # IPv4 addresses
    (r"\b[A-Za-z]*\d[A-Za-z0-9]{5,}\b", "<id>"),    # tokens of 6+ with a digit: session ids, timestamps
)
_COMPILED = tuple((re.compile(p, re.ASCII), r) for p, r in RULES)


def normalise(text: str | None) -> str:
    """The reply's kind: per-message detail replaced, whitespace collapsed, at most MAX_LEN chars."""
    if not text or type(text) is not str:
        return ""
    out = text.strip()
    for rx, repl in _COMPILED:
        out = rx.sub(repl, out)
    return out.strip()[:MAX_LEN]
