"""One GELF payload (a datagram, a reassembled chunk set, a TCP frame or an HTTP
body) -> a dict, within limits. Every way to fail raises GelfError with the
reason the receiver counts (otelmta_receiver_refused_records{reason}).

Compression is recognised by its magic bytes, as Graylog does: zlib (0x78 with
a valid header check), gzip (0x1f 0x8b), anything else is taken as JSON. A
decompression bomb is stopped after `max_size` output bytes without inflating
the rest: decompressobj().decompress(data, max_length) leaves what it did not
inflate in `unconsumed_tail`.
"""
from __future__ import annotations

import json
import zlib

import orjson

# Deflate cannot expand more than ~1032:1, so an input below max_size/1032 bytes
# can be inflated in one call (faster) with no risk of passing the cap.
DEFLATE_MAX_RATIO = 1032


class GelfError(Exception):
    """A payload we refuse; `reason` is the counted label."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason


def is_zlib(data) -> bool:
    return len(data) >= 2 and data[0] == 0x78 and ((data[0] << 8) | data[1]) % 31 == 0


def is_gzip(data) -> bool:
    return len(data) >= 2 and data[0] == 0x1F and data[1] == 0x8B


def inflate(data, max_size: int) -> bytes:
    """zlib or gzip data (auto-detected) -> at most max_size bytes, or GelfError."""
    if len(data) * DEFLATE_MAX_RATIO <= max_size:
        try:
            return zlib.decompress(data, 47)  # 32 + 15: zlib or gzip header
        except zlib.error as err:
            raise GelfError("bad_compression", str(err)) from None
    d = zlib.decompressobj(47)
    try:
        out = d.decompress(data, max_size)
    except zlib.error as err:
        raise GelfError("bad_compression", str(err)) from None
    if d.unconsumed_tail or (not d.eof and len(out) >= max_size):
        raise GelfError("too_large", f"inflates to more than {max_size} bytes")
    if not d.eof:
        raise GelfError("bad_compression", "truncated compressed data")
    return out


def decompress(data, max_size: int):
    """The JSON bytes of a payload: inflated when compressed, else as given."""
    if is_zlib(data) or is_gzip(data):
        return inflate(data, max_size)
    if len(data) > max_size:
        raise GelfError("too_large", f"{len(data)} bytes")
    return data


def parse_json(data) -> dict:
    """GELF JSON -> dict. Invalid UTF-8 is replaced (U+FFFD), not refused: a
    log line with one broken byte is still worth having."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        text = str(err)
        if "depth limit" in text:
            raise GelfError("too_deep", text) from None
        if "utf-8" not in text.lower():
            obj = _with_non_finite_numbers(data)
            if obj is None:
                raise GelfError("invalid_json", text) from None
            return _object(obj)
        try:
            obj = orjson.loads(bytes(data).decode("utf-8", "replace"))
        except orjson.JSONDecodeError as err2:
            raise GelfError("invalid_json", str(err2)) from None
    return _object(obj)


def _object(obj) -> dict:
    if type(obj) is not dict:
        raise GelfError("not_an_object", type(obj).__name__)
    return obj


def _with_non_finite_numbers(data):
    """Python's json module, which pygelf and graypy use, writes float('inf')
    and nan as the bare words Infinity, -Infinity and NaN; strict parsers
    refuse the whole message for it. Such a message is read here with those
    values kept as text (a log line is worth more than one odd number).
    Only reached when orjson refused the payload; None if it is still invalid."""
    raw = bytes(data)
    if b"Infinity" not in raw and b"NaN" not in raw:
        return None
    try:
        return json.loads(raw.decode("utf-8", "replace"), parse_constant=str)
    except (ValueError, RecursionError):
        return None


def decode(data, max_size: int) -> dict:
    """A complete (not chunked) GELF payload -> dict."""
    return parse_json(decompress(data, max_size))


def depth_ok(value, limit: int) -> bool:
    """Whether a nested field value stays within `limit` levels (iterative: a
    hostile value cannot exhaust the stack)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return False
        if type(v) is dict:
            stack.extend((x, d + 1) for x in v.values() if type(x) in (dict, list))
        elif type(v) is list:
            stack.extend((x, d + 1) for x in v if type(x) in (dict, list))
    return True
