"""OTLP log records, written in the wire format (see signals/wire.py for why)."""
from __future__ import annotations

from otel_mta.signals import wire

# OpenTelemetry log data model severity numbers
TRACE, DEBUG, INFO, WARN, ERROR, FATAL = 1, 5, 9, 13, 17, 21
SEVERITY_TEXT = {TRACE: "TRACE", DEBUG: "DEBUG", INFO: "INFO", WARN: "WARN", ERROR: "ERROR", FATAL: "FATAL"}
_SEVERITY_FIELDS = {n: wire.LOG_SEVERITY_NUMBER + wire.varint(n) + wire.ld(wire.LOG_SEVERITY_TEXT, t.encode())
                    for n, t in SEVERITY_TEXT.items()}

encode_attrs = wire.encode_attrs
TAG = wire.LOG_ATTRS


def encode_log_py(time_ns: int, observed_ns: int, severity: int, body: str,
                  attrs: bytes, trace_id: bytes | None = None,
                  span_id: bytes | None = None, event_name: str | None = None,
                  severity_text: str | None = None) -> bytes:
    """A LogRecord message. `attrs` is `encode_attrs(TAG, {...})`, or what to
    pass to it (a dict, or a tuple of dicts).

    `severity` is an OpenTelemetry severity number (1-24); the text defaults to
    the name of its range (INFO for 9, ...).
    """
    parts = [wire.fixed64(wire.LOG_TIME, time_ns) if time_ns else b""]
    sev = _SEVERITY_FIELDS.get(severity if severity_text is None else (severity, severity_text))
    if sev is None:
        sev = wire.LOG_SEVERITY_NUMBER + wire.varint(severity)
        text = severity_text if severity_text is not None else SEVERITY_TEXT.get(severity - (severity - 1) % 4, "")
        if text:
            sev += wire.ld(wire.LOG_SEVERITY_TEXT, text.encode("utf-8", "replace"))
        if severity_text is not None and len(_SEVERITY_FIELDS) < 256:  # producers' own level names repeat
            _SEVERITY_FIELDS[(severity, severity_text)] = sev
    parts.append(sev)
    parts.append(wire.ld(wire.LOG_BODY, wire.ld(wire.ANY_STRING, body.encode("utf-8", "replace"))))
    parts.append(wire.encode_attrs_py(TAG, attrs) if isinstance(attrs, (dict, tuple)) else attrs)
    if trace_id:
        parts.append(wire.ld(wire.LOG_TRACE_ID, trace_id))
        if span_id:
            parts.append(wire.ld(wire.LOG_SPAN_ID, span_id))
    parts.append(wire.fixed64(wire.LOG_OBSERVED_TIME, observed_ns))
    if event_name:
        parts.append(wire.ld(wire.LOG_EVENT_NAME, event_name.encode("utf-8", "replace")))
    return b"".join(parts)


try:  # the C twin (signals/_wire.c)
    from otel_mta.signals._wire import encode_log
except ImportError:  # pragma: no cover - exercised where no compiler exists
    encode_log = encode_log_py
