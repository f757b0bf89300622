"""Deterministic trace and span ids for a mail message.

Every producer (this sidecar, the Node.js ZoneMTA plugin, GELF from WildDuck or
ZoneMTA) derives the same ids from the message's identity with no coordination.
The rules are in docs/trace-ids.md; spec/trace-id-vectors.json holds the test
vectors that every implementation must reproduce.
"""
from __future__ import annotations

import hashlib

_ASCII_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# What is trimmed: ASCII whitespace only (str.strip() would also trim U+00A0,
# U+2000.., U+3000 and more, a set other languages do not share).
WS = " \t\r\n\f\v"


def normalize_message_id_py(value: str | None) -> str | None:
    """Normalise an RFC 5322 Message-ID; None when there is no usable id.

    Trim ASCII whitespace and the angle brackets, keep the local part as written and
    lowercase the domain (ASCII only, so every language agrees). This is the
    reference; normalize_message_id is its C twin (otel_mta/_ids.c) where built.
    """
    if not value:
        return None
    mid = value.strip(WS)
    if mid.startswith("<"):
        mid = mid[1:]
    if mid.endswith(">"):
        mid = mid[:-1]
    mid = mid.strip(WS)
    if not mid:
        return None
    at = mid.rfind("@")
    if at >= 0:
        mid = mid[:at] + "@" + mid[at + 1 :].translate(_ASCII_UPPER)
    return mid


def trace_key(message_id: str | None, queue_id: str | None) -> str | None:
    """The string a trace id is hashed from: the Message-ID, else the queue id."""
    mid = normalize_message_id(message_id)
    if mid is not None:
        return "mid:" + mid
    if queue_id:
        qid = queue_id.strip(WS)
        if qid:
            return "qid:" + qid
    return None


def _digest_py(text: str, size: int) -> bytes:
    out = hashlib.sha256(text.encode("utf-8")).digest()[:size]
    if out.count(0) == size:  # all-zero ids are invalid in OTLP
        out = out[:-1] + b"\x01"
    return out


def trace_id_for(message_id: str | None, queue_id: str | None) -> bytes | None:
    key = trace_key(message_id, queue_id)
    return None if key is None else _digest(key, 16)


def trace_id_from_key(key: str) -> bytes:
    """The trace id of a key made by trace_key() (`mid:...` or `qid:...`)."""
    return _digest(key, 16)


def root_span_id_py(queue_id: str) -> bytes:
    """The message's root span: one per ZoneMTA queue entry."""
    return _digest("root:" + queue_id.strip(WS), 8)


def final_span_id(queue_id: str) -> bytes:
    """The message.final span: the message's outcome, when its root span ended
    before it (a deferral). One per queue entry; made by the sidecar only."""
    return _digest("final:" + queue_id.strip(WS), 8)


def attempt_span_id_py(queue_id: str, seq: str, action: str, defcount: int = 0) -> bytes:
    """One delivery attempt of one recipient (seq) of a queued message.

    ACCEPTED and REJECTED happen once per (queue id, seq); DEFERRED happens once
    per deferral count, which ZoneMTA reports as `defcount`.
    """
    return _digest(f"attempt:{queue_id.strip(WS)}:{seq}:{action}:{int(defcount)}", 8)


def inbound_span_id(transaction_id: str) -> bytes:
    """The SERVER span of an inbound SMTP transaction (Haraka's transaction uuid,
    `<connection uuid>.N`); Haraka's relay attempts of that message are its children."""
    return _digest("inbound:" + transaction_id.strip(WS), 8)


def relay_attempt_span_id(entry_id: str, end_ms: int, action: str, defcount: int = 0) -> bytes:
    """One delivery attempt of Haraka's outbound queue (`<transaction uuid>.K`,
    one entry per destination domain). Unlike ZoneMTA's, one entry can end
    several attempts the same way: the recipients Haraka splits off after a
    partial failure keep the entry's uuid (and their deferral count starts
    again), so the attempt's end (ms) is part of the key. Made by the sidecar
    only."""
    return _digest(f"relay:{entry_id.strip(WS)}:{int(end_ms)}:{action}:{int(defcount)}", 8)


def phase_span_id(attempt: bytes, phase: str) -> bytes:
    """A child of an attempt span (connect, tls, smtp) reported by the plugin."""
    return _digest(f"phase:{attempt.hex()}:{phase}", 8)


# The C twins (otel_mta/_ids.c): the same bytes without an OpenSSL object per
# id, and without a Python call for the ids made per entry. The *_py functions
# stay the reference (tests/test_ids.py holds the twins to them).
try:
    from otel_mta import _ids
except ImportError:  # pragma: no cover - exercised where no compiler exists
    _digest = _digest_py
    normalize_message_id = normalize_message_id_py
    root_span_id = root_span_id_py
    attempt_span_id = attempt_span_id_py
else:
    _digest = _ids.digest
    _ids.setup(normalize_message_id_py)
    normalize_message_id = _ids.normalize_message_id
    root_span_id = _ids.root_span_id
    attempt_span_id = _ids.attempt_span_id
