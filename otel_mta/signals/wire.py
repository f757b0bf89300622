"""Protocol Buffers wire format for the OTLP messages on the hot path.

Why by hand: building OTLP log records and spans with the generated protobuf
classes costs ~10 us each here (upb copies every nested message; PERF-FACTS);
writing the wire format directly, with the encoded form of repeated attribute
values cached, costs ~5 us. Logs and spans are produced per mail event, so
this decides the sidecar's throughput. Metrics are exported once per interval
and use the generated classes (signals/metrics.py).

The hot encoders (attributes, log records, spans, requests) also have C twins
in _wire.c, used when built: several times faster again
(bench/remote_log_stages.py prints both). The Python functions here are
the reference: tests/test_wire.py checks that both write the same bytes and
that the official opentelemetry-proto classes parse them field for field.
"""
from __future__ import annotations

import struct
import sys

_Q = struct.Struct("<Q").pack
_D = struct.Struct("<d").pack
NO_LIMIT = sys.maxsize


def varint(n: int) -> bytes:
    if n < 0:
        n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [varint(i) for i in range(1 << 14)]


def ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 16384 else varint(n)) + payload


def fixed64(tag: bytes, n: int) -> bytes:
    return tag + _Q(n)


def double(tag: bytes, x: float) -> bytes:
    return tag + _D(x)


# Tags (field number << 3 | wire type) of the OTLP messages we write.
# common.v1.AnyValue
ANY_STRING, ANY_BOOL, ANY_INT, ANY_DOUBLE, ANY_ARRAY, ANY_KVLIST = b"\x0a", b"\x10", b"\x18", b"\x21", b"\x2a", b"\x32"
# common.v1.KeyValue / ArrayValue / KeyValueList
KV_KEY, KV_VALUE = b"\x0a", b"\x12"
# ExportXServiceRequest.resource_x, ResourceX.resource / scope_x, ScopeX.scope / records
REQ_RESOURCE_ITEMS = b"\x0a"
RES_RESOURCE, RES_SCOPE_ITEMS = b"\x0a", b"\x12"
SCOPE_SCOPE, SCOPE_ITEMS = b"\x0a", b"\x12"
RESOURCE_ATTR = b"\x0a"
SCOPE_NAME, SCOPE_VERSION = b"\x0a", b"\x12"
# logs.v1.LogRecord
LOG_TIME, LOG_SEVERITY_NUMBER, LOG_SEVERITY_TEXT, LOG_BODY = b"\x09", b"\x10", b"\x1a", b"\x2a"
LOG_ATTR, LOG_FLAGS, LOG_TRACE_ID, LOG_SPAN_ID, LOG_OBSERVED_TIME, LOG_EVENT_NAME = (
    b"\x32", b"\x45", b"\x4a", b"\x52", b"\x59", b"\x62")
# trace.v1.Span
SPAN_TRACE_ID, SPAN_ID, SPAN_PARENT_ID, SPAN_NAME, SPAN_KIND = b"\x0a", b"\x12", b"\x22", b"\x2a", b"\x30"
SPAN_START, SPAN_END, SPAN_ATTR, SPAN_EVENT, SPAN_STATUS, SPAN_FLAGS = (
    b"\x39", b"\x41", b"\x4a", b"\x5a", b"\x7a", b"\x85\x01")
EVENT_TIME, EVENT_NAME, EVENT_ATTR = b"\x09", b"\x12", b"\x1a"
STATUS_MESSAGE, STATUS_CODE = b"\x12", b"\x18"

SPAN_KIND_INTERNAL, SPAN_KIND_SERVER, SPAN_KIND_CLIENT = 1, 2, 3
STATUS_OK, STATUS_ERROR = 1, 2


# -- attribute value length limits (set_limits) ----------------------------------
class Limit:
    """One signal's limits: `all` for every string attribute, `text` (<= all)
    for free-text keys; a string of at most `low` characters needs no look."""

    __slots__ = ("all", "text", "low", "signal")

    def __init__(self, signal: str):
        self.signal = signal
        self.all = self.text = self.low = NO_LIMIT


LIMITS = {"logs": Limit("logs"), "traces": Limit("traces")}
_FREE_KEYS: frozenset = frozenset()
_FREE_PREFIXES: tuple = ()
_TRUNCATED = {"logs": 0, "traces": 0}    # by the Python twins; the C twins count their own


def _limit_for(tag: int) -> Limit | None:
    if tag == LOG_ATTRS:
        return LIMITS["logs"]
    if tag == SPAN_ATTRS or tag == EVENT_ATTRS:
        return LIMITS["traces"]
    return None


def set_limits_py(logs: int | None, spans: int | None, free_text: int | None,
                  free_keys: frozenset = frozenset(), free_prefixes: tuple = ()) -> None:
    global _FREE_KEYS, _FREE_PREFIXES
    any_free = bool(free_keys or free_prefixes)
    text = NO_LIMIT if free_text is None else free_text
    for limit, value in ((LIMITS["logs"], logs), (LIMITS["traces"], spans)):
        limit.all = NO_LIMIT if value is None else value
        limit.text = limit.low = text if any_free and text < limit.all else limit.all
    _FREE_KEYS, _FREE_PREFIXES = frozenset(free_keys), tuple(free_prefixes)


def _cap(limit: Limit, key: str) -> int:
    """The most characters a string value of `key` may keep."""
    if limit.text >= limit.all:
        return limit.all
    return limit.text if key in _FREE_KEYS or key.startswith(_FREE_PREFIXES) else limit.all


def any_value(value, cap: int = NO_LIMIT, signal: str = "logs") -> bytes:
    """An AnyValue message (without its own tag) for a Python value; strings,
    at any depth, keep at most `cap` characters (counted as truncated)."""
    t = type(value)
    if t is str:
        if len(value) > cap:
            value = value[:cap]
            _TRUNCATED[signal] += 1
        return ld(ANY_STRING, value.encode("utf-8", "replace"))
    if t is bool:
        return ANY_BOOL + (b"\x01" if value else b"\x00")
    if t is int:
        if -(1 << 63) <= value < (1 << 63):
            return ANY_INT + varint(value)
        return ld(ANY_STRING, str(value).encode())  # beyond int64: keep the digits
    if t is float:
        return double(ANY_DOUBLE, value)
    if t in (list, tuple):
        return ld(ANY_ARRAY, b"".join(ld(b"\x0a", any_value(v, cap, signal)) for v in value))
    if t is dict:
        return ld(ANY_KVLIST, b"".join(ld(b"\x0a", key_value(str(k), v, cap, signal)) for k, v in value.items()))
    if t is bytes:
        return ld(b"\x3a", value)
    return ld(ANY_STRING, str(value).encode("utf-8", "replace"))


def key_value(key: str, value, cap: int = NO_LIMIT, signal: str = "logs") -> bytes:
    """A KeyValue message (without its own tag)."""
    return ld(KV_KEY, key.encode("utf-8")) + ld(KV_VALUE, any_value(value, cap, signal))


class Attributes:
    """Encodes attribute dicts as KeyValue messages, each with its length in front.

    The result does not depend on the field the attributes go into, so one
    encoding serves a log record and a span alike (`field()` adds the tag).
    Most values repeat (zone, sending IP, MX host, outcome): the finished bytes
    of pairs whose key is in `cached_keys` are kept, and the cache is cleared
    when it passes `cache_size`, so unbounded values cannot grow it.
    """

    __slots__ = ("_cache", "_cache_size", "_keys")

    def __init__(self, cache_size: int = 50_000):
        self._cache: dict = {}
        self._cache_size = cache_size
        self._keys: dict = {}   # key -> its encoded KeyValue.key field

    def _pair(self, key: str, value, limit: Limit | None = None) -> bytes:
        kf = self._keys.get(key)
        if kf is None:
            kf = self._keys[key] = ld(KV_KEY, key.encode("utf-8"))
        t = type(value)
        if t is str:
            if limit is not None and len(value) > limit.low:
                cap = _cap(limit, key)
                if len(value) > cap:
                    value = value[:cap]
                    _TRUNCATED[limit.signal] += 1
            raw = value.encode("utf-8", "replace")
            n = len(raw)
            av = ANY_STRING + (_SMALL[n] if n < 16384 else varint(n)) + raw
        elif limit is not None and (t is list or t is tuple or t is dict):
            av = any_value(value, _cap(limit, key), limit.signal)
        else:
            av = any_value(value)
        n = len(av)
        body = kf + KV_VALUE + (_SMALL[n] if n < 16384 else varint(n)) + av
        n = len(body)
        return (_SMALL[n] if n < 16384 else varint(n)) + body

    def encode(self, attrs: dict | tuple, cached_keys: frozenset = frozenset(),
               limit: Limit | None = None) -> list[bytes]:
        if type(attrs) is tuple:  # several dicts, in order
            return [kv for part in attrs for kv in self.encode(part, cached_keys, limit)]
        out = []
        cache = self._cache
        pair = self._pair
        # the cache holds pairs no limit cuts: the same bytes whatever the signal
        low = min(LIMITS["logs"].low, LIMITS["traces"].low)
        for key, value in attrs.items():
            if value is None:
                continue
            t = type(value)
            if key in cached_keys and t is not list and t is not dict and t is not tuple \
                    and not (t is str and len(value) > low):
                ck = (key, t, value)   # with the type: 1, 1.0 and True are equal keys in a dict
                enc = cache.get(ck)
                if enc is None:
                    if len(cache) >= self._cache_size:
                        cache.clear()
                    enc = cache[ck] = pair(key, value)
                out.append(enc)
            else:
                out.append(pair(key, value, limit))
        return out


ATTRIBUTES = Attributes()  # shared by logs and spans: one cache, one encoding


def field(tag: bytes, encoded: list[bytes]) -> bytes:
    """Encoded attributes (from Attributes.encode) as repeated fields under `tag`."""
    return tag + tag.join(encoded) if encoded else b""


# One-byte field tags, as ints, for encode_attrs
LOG_ATTRS, SPAN_ATTRS, EVENT_ATTRS = LOG_ATTR[0], SPAN_ATTR[0], EVENT_ATTR[0]


def encode_attrs_py(tag: int, attrs: dict | tuple, cached_keys: frozenset = frozenset()) -> bytes:
    """Every non-None attribute of `attrs` (a dict, or a tuple of dicts read in
    order) as a KeyValue field under `tag`, within the tag's length limits."""
    return field(bytes((tag,)), ATTRIBUTES.encode(attrs, cached_keys, _limit_for(tag)))


def resource(attrs: dict) -> bytes:
    """A Resource message (without its own tag)."""
    return b"".join(ld(RESOURCE_ATTR, key_value(k, v)) for k, v in attrs.items() if v is not None)


def scope(name: str, version: str) -> bytes:
    return ld(SCOPE_NAME, name.encode()) + ld(SCOPE_VERSION, version.encode())


def request_py(groups: list[tuple[bytes, bytes, list[bytes]]]) -> bytes:
    """An Export{Logs,Trace}ServiceRequest from (resource, scope, records) groups.

    `records` are finished LogRecord / Span messages without their tag; the
    layout of the three request types is the same up to the record level.
    """
    out = []
    for res, scp, records in groups:
        inner = ld(SCOPE_SCOPE, scp) + b"".join(ld(SCOPE_ITEMS, r) for r in records)
        out.append(ld(REQ_RESOURCE_ITEMS, ld(RES_RESOURCE, res) + ld(RES_SCOPE_ITEMS, inner)))
    return b"".join(out)


try:  # the C twins (signals/_wire.c), built by `pip install` when a compiler is present
    from otel_mta.signals._wire import encode_attrs, request
    from otel_mta.signals import _wire
except ImportError:  # pragma: no cover - exercised where no compiler exists
    encode_attrs, request, _wire = encode_attrs_py, request_py, None
HAVE_C = encode_attrs is not encode_attrs_py


def set_limits(logs: int | None = None, spans: int | None = None, free_text: int | None = None,
               free_keys: frozenset = frozenset(), free_prefixes: tuple = ()) -> None:
    """Attribute value length limits, for the Python and the C twins alike.

    `logs` / `spans`: OpenTelemetry's OTEL_LOGRECORD_ / OTEL_SPAN_ /
    OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT, characters (None: no limit). A longer
    string is cut to that many characters, and so is each string in an array
    or map; other values are never cut. `free_text` also caps the values of
    `free_keys` and of keys starting with one of `free_prefixes` (the
    catalog's free-text fields). Process-wide, like the encoders; the last
    call wins (the pipeline makes it from the settings).
    """
    set_limits_py(logs, spans, free_text, free_keys, free_prefixes)
    if _wire is not None:
        _wire.set_limits(logs, spans, free_text, frozenset(free_keys), tuple(free_prefixes))


def truncations() -> dict:
    """{"logs": n, "traces": n}: attribute values cut by the limits so far."""
    out = dict(_TRUNCATED)
    if _wire is not None:
        c_logs, c_spans = _wire.truncations()
        out["logs"] += c_logs
        out["traces"] += c_spans
    return out
