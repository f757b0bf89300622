"""OTLP spans, written in the wire format (see signals/wire.py for why)."""
from __future__ import annotations

from otel_mta.signals import wire
from otel_mta.signals.wire import SPAN_KIND_CLIENT, SPAN_KIND_INTERNAL, SPAN_KIND_SERVER, STATUS_ERROR, STATUS_OK  # noqa: F401

encode_attrs = wire.encode_attrs
TAG = wire.SPAN_ATTRS
_KIND = {k: wire.SPAN_KIND + bytes([k]) for k in (1, 2, 3, 4, 5)}
# W3C trace flags: sampled (we never sample at the source; tail sampling decides)
_FLAGS = wire.SPAN_FLAGS + b"\x01\x00\x00\x00"


def encode_span_py(trace_id: bytes, span_id: bytes, parent_id: bytes | None, name: str, kind: int,
                   start_ns: int, end_ns: int, attrs: bytes,
                   status: int = 0, status_message: str | None = None,
                   events: list[tuple[int, str, dict]] | None = None) -> bytes:
    """A Span message. `attrs` is `encode_attrs(TAG, {...})`, or what to pass
    to it (a dict, or a tuple of dicts); events are (time_ns, name, attributes dict)."""
    parts = [wire.ld(wire.SPAN_TRACE_ID, trace_id), wire.ld(wire.SPAN_ID, span_id)]
    if parent_id:
        parts.append(wire.ld(wire.SPAN_PARENT_ID, parent_id))
    parts.append(wire.ld(wire.SPAN_NAME, name.encode("utf-8", "replace")))
    parts.append(_KIND[kind])
    parts.append(wire.fixed64(wire.SPAN_START, start_ns))
    parts.append(wire.fixed64(wire.SPAN_END, max(end_ns, start_ns)))
    parts.append(wire.encode_attrs_py(TAG, attrs) if isinstance(attrs, (dict, tuple)) else attrs)
    for time_ns, ev_name, ev_attrs in events or ():
        body = wire.fixed64(wire.EVENT_TIME, time_ns) + wire.ld(wire.EVENT_NAME, ev_name.encode("utf-8", "replace"))
        body += wire.encode_attrs_py(wire.EVENT_ATTRS, ev_attrs)
        parts.append(wire.ld(wire.SPAN_EVENT, body))
    if status:
        st = wire.STATUS_CODE + wire.varint(status)
        if status_message:
            st = wire.ld(wire.STATUS_MESSAGE, status_message.encode("utf-8", "replace")) + st
        parts.append(wire.ld(wire.SPAN_STATUS, st))
    parts.append(_FLAGS)
    return b"".join(parts)


try:  # the C twin (signals/_wire.c)
    from otel_mta.signals._wire import encode_span
except ImportError:  # pragma: no cover - exercised where no compiler exists
    encode_span = encode_span_py
