"""Decoder for the msgpack dialect of the npm package msgpack-js@0.3.0.

ZoneMTA's remote log (via @zone-eu/wild-plugins) encodes every entry with
msgpack-js 0.3.0, which predates the current msgpack spec and reuses codes that
the spec later gave other meanings:

    0xc4  undefined          (msgpack today: bin 8)
    0xd8  buffer, 16-bit len (msgpack today: fixext 16)
    0xd9  buffer, 32-bit len (msgpack today: str 8)

ZoneMTA leaves many fields undefined (httpUrl, tlsCipher, ...), so nearly every
delivery entry holds 0xc4, and a modern decoder (the `msgpack` package) misreads
it as the start of a byte string. No maintained library speaks this dialect, so
it is decoded here. Numbers that are not 32-bit integers (millisecond
timestamps, for one) arrive as float64, as the encoder writes them.

`undefined` decodes to None, like `null`: in ZoneMTA's entries both mean "not
set", and OTLP has no way to say the difference.
"""
from __future__ import annotations

import struct

__all__ = ["DecodeError", "decode", "decode_py", "HAVE_C"]


class DecodeError(ValueError):
    """Malformed input; `reason` is a short counter label."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


MAX_DEPTH = 16

_u16 = struct.Struct(">H").unpack_from
_u32 = struct.Struct(">I").unpack_from
_u64 = struct.Struct(">Q").unpack_from
_i8 = struct.Struct(">b").unpack_from
_i16 = struct.Struct(">h").unpack_from
_i32 = struct.Struct(">i").unpack_from
_i64 = struct.Struct(">q").unpack_from
_f32 = struct.Struct(">f").unpack_from
_f64 = struct.Struct(">d").unpack_from

# fixed-size scalars: code -> (reader, size of the payload after the code byte)
_SCALARS = {
    0xcc: (lambda b, o: b[o], 1),
    0xcd: (_u16, 2),
    0xce: (_u32, 4),
    0xcf: (_u64, 8),
    0xd0: (_i8, 1),
    0xd1: (_i16, 2),
    0xd2: (_i32, 4),
    0xd3: (_i64, 8),
    0xca: (_f32, 4),
    0xcb: (_f64, 8),
}
_CONSTANTS = {0xc0: None, 0xc2: False, 0xc3: True, 0xc4: None}  # 0xc4: undefined
# variable-size: code -> (kind, width of the length field)
_SIZED = {
    0xda: ("str", 2), 0xdb: ("str", 4),
    0xd8: ("bin", 2), 0xd9: ("bin", 4),
    0xdc: ("arr", 2), 0xdd: ("arr", 4),
    0xde: ("map", 2), 0xdf: ("map", 4),
}


def decode_py(data: bytes) -> object:
    """Reference decoder: one msgpack-js value that must fill `data` exactly."""
    end = len(data)
    if end == 0:
        raise DecodeError("empty")

    def text(start: int, length: int) -> str:
        stop = start + length
        if stop > end:
            raise DecodeError("truncated", "string past end of datagram")
        # ZoneMTA writes UTF-8; repair rather than lose an entry with a bad byte.
        return data[start:stop].decode("utf-8", "replace")

    def parse(pos: int, depth: int):
        if pos >= end:
            raise DecodeError("truncated", "value past end of datagram")
        code = data[pos]
        pos += 1
        if code < 0x80:  # positive fixnum
            return code, pos
        if code >= 0xe0:  # negative fixnum
            return code - 0x100, pos
        if 0xa0 <= code < 0xc0:  # fixraw (string)
            length = code & 0x1f
            return text(pos, length), pos + length
        if code < 0xa0:  # fixmap 0x80-0x8f, fixarray 0x90-0x9f
            kind = "map" if code < 0x90 else "arr"
            return _container(kind, code & 0x0f, pos, depth)
        if code in _CONSTANTS:
            return _CONSTANTS[code], pos
        scalar = _SCALARS.get(code)
        if scalar is not None:
            reader, size = scalar
            if pos + size > end:
                raise DecodeError("truncated", "number past end of datagram")
            value = reader(data, pos)
            return (value if type(value) is int else value[0]), pos + size
        sized = _SIZED.get(code)
        if sized is None:
            raise DecodeError("unknown_type", f"code 0x{code:02x} at offset {pos - 1}")
        kind, width = sized
        if pos + width > end:
            raise DecodeError("truncated", "length past end of datagram")
        length = (_u16 if width == 2 else _u32)(data, pos)[0]
        pos += width
        if kind == "str":
            return text(pos, length), pos + length
        if kind == "bin":
            if pos + length > end:
                raise DecodeError("truncated", "buffer past end of datagram")
            return bytes(data[pos:pos + length]), pos + length
        return _container(kind, length, pos, depth)

    def _container(kind: str, length: int, pos: int, depth: int):
        if depth >= MAX_DEPTH:
            raise DecodeError("too_deep", f"more than {MAX_DEPTH} nested containers")
        # every element takes at least one byte: refuse lengths the datagram
        # cannot hold before allocating anything for them
        if length * (2 if kind == "map" else 1) > end - pos:
            raise DecodeError("truncated", f"{kind} of {length} entries past end of datagram")
        depth += 1
        if kind == "arr":
            items = []
            for _ in range(length):
                value, pos = parse(pos, depth)
                items.append(value)
            return items, pos
        out = {}
        for _ in range(length):
            # keys are nearly always fixraw strings: take them without a call
            code = data[pos] if pos < end else -1
            if 0xa0 <= code < 0xc0:
                klen = code & 0x1f
                key = text(pos + 1, klen)
                pos += 1 + klen
            else:
                key, pos = parse(pos, depth)
                if not isinstance(key, str):
                    if isinstance(key, (int, float, bool)) or key is None:
                        key = str(key)
                    else:
                        raise DecodeError("bad_key", "map key is not a string or number")
            out[key], pos = parse(pos, depth)
        return out, pos

    value, pos = parse(0, 0)
    if pos != end:
        raise DecodeError("trailing_bytes", f"{end - pos} bytes after the value")
    return value


try:  # the C twin, built by `pip install` when a compiler is present
    from otel_mta.sources import _msgpack_js as _c
except ImportError:  # pragma: no cover - exercised where no compiler exists
    _c = None
    decode = decode_py
else:
    _c.setup(DecodeError)  # it raises DecodeError(reason, detail) itself: no wrapper call per datagram
    decode = _c.decode

HAVE_C = _c is not None
