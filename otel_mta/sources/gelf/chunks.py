"""Reassembly of chunked GELF datagrams, bounded in time, sets and bytes.

Two chunk headers exist in the wild:

    spec (Graylog, pygelf, graypy, Docker ...)   1e 0f | id (8 bytes) | seq | count | data
    npm `gelf` 2.0.1 (ZoneMTA, WildDuck)          1e 0f | id (1 byte)  | seq | count | data

The npm package builds its header with `[0x1e, 0x0f].concat(msgId, index,
count, chunk)`, so its random 8-digit message id lands in the buffer as ONE
byte (its low 8 bits) and the header is 5 bytes long. Graylog cannot read
these; we can. A datagram is read as the format its sender (address and port)
was last seen to use successfully; for a sender not seen yet, as npm-gelf when
only that reading is plausible, or when it is the first chunk of a zlib stream
(npm `gelf` always deflates), or when it continues an npm-gelf set already
pending; else as the spec format.

Chunks may arrive in any order; duplicates are ignored; more than 128 chunks
are refused (the GELF limit). A set must complete within `timeout_s` of its
first chunk (Graylog: 5 s). At most `max_sets` sets and `max_bytes` bytes of
chunk data are held: beyond that the oldest sets are dropped, so a flood of
chunk-set ids cannot grow memory and fresh sets still complete.
"""
from __future__ import annotations

from collections import OrderedDict

from otel_mta.correlate import BoundedMap
from otel_mta.sources.gelf.decode import GelfError, is_zlib

SPEC, NPM = "spec", "npm"
HEADER = {SPEC: 12, NPM: 5}
MAX_CHUNKS = 128


class ChunkSet:
    __slots__ = ("count", "parts", "got", "size", "born", "kind")

    def __init__(self, count: int, born: int, kind: str):
        self.count = count
        self.parts: list = [None] * count
        self.got = 0
        self.size = 0
        self.born = born
        self.kind = kind


class Reassembler:
    def __init__(self, timeout_s: float = 5.0, max_sets: int = 1000, max_bytes: int = 32 << 20,
                 on_drop=None, peers: int = 4096):
        self.timeout_ns = int(timeout_s * 1e9)
        self.max_sets = max_sets
        self.max_bytes = max_bytes
        self.sets: OrderedDict = OrderedDict()  # key -> ChunkSet, oldest first (O(1) at both ends)
        self.bytes = 0                  # chunk data held
        self._kinds = BoundedMap(peers)  # peer -> format that last decoded
        self._spec_keys: dict = {}       # peer -> keys of its pending spec sets (for _adopt)
        self._on_drop = on_drop or (lambda reason, n=1: None)

    def __len__(self) -> int:
        return len(self.sets)

    # -- format --------------------------------------------------------------
    def _kind(self, data, peer) -> str:
        n = len(data)
        spec = n > 12 and data[10] < data[11]
        npm = n > 5 and data[3] < data[4] and data[4] >= 2
        learned = self._kinds.get(peer)
        if learned is SPEC and spec or learned is NPM and npm:
            kind = learned
        elif npm and ((data[3] == 0 and is_zlib(data[5:7])) or (peer, data[2]) in self.sets):
            kind = NPM
        elif spec and data[11] <= MAX_CHUNKS and not (npm and self._mismatch(peer, data)):
            kind = SPEC
        elif npm and data[4] <= MAX_CHUNKS:
            kind = NPM
        elif spec or npm:
            raise GelfError("too_many_chunks")
        else:
            raise GelfError("bad_chunk")
        if (data[4] if kind is NPM else data[11]) > MAX_CHUNKS:
            raise GelfError("too_many_chunks")
        return kind

    def _mismatch(self, peer, data) -> bool:
        """A spec reading that contradicts the pending set it would join."""
        pending = self.sets.get((peer, data[2:10]))
        return pending is not None and pending.count != data[11]

    def confirm(self, peer, kind: str) -> None:
        """The payload of a `kind` set from `peer` decoded: read its chunks so."""
        if self._kinds.get(peer) is not kind:
            self._kinds.put(peer, kind)

    # -- sets ------------------------------------------------------------------
    def add(self, data: bytes, peer, now_ns: int):
        """Take one chunk; returns (payload, kind) when its set is complete."""
        self.expire(now_ns)
        kind = self._kind(data, peer)
        if kind is NPM:
            key, seq, count = (peer, data[2]), data[3], data[4]
        else:
            key, seq, count = (peer, data[2:10]), data[10], data[11]
        chunk_set = self.sets.get(key)
        if chunk_set is None:
            if len(self.sets) >= self.max_sets:
                self._evict("chunk_sets_full")
            chunk_set = self.sets[key] = ChunkSet(count, now_ns, kind)
            if kind is SPEC:
                self._spec_keys.setdefault(peer, set()).add(key)
            if kind is NPM and self._kinds.get(peer) is None:
                self._adopt(peer, data[2], chunk_set)
        elif chunk_set.count != count:
            raise GelfError("chunk_count_mismatch")
        if chunk_set.parts[seq] is not None:
            self._on_drop("duplicate_chunk")
            return None
        size = len(data)
        while self.bytes + size > self.max_bytes and len(self.sets) > 1:
            self._evict("chunk_bytes_full", skip=key)
        if self.bytes + size > self.max_bytes:
            self._drop(key, "chunk_bytes_full")
            return None
        chunk_set.parts[seq] = data   # whole datagrams: no copy now, headers cut when joined
        chunk_set.got += 1
        chunk_set.size += size
        self.bytes += size
        if chunk_set.got < chunk_set.count:
            return None
        self._remove(key)
        cut = HEADER[kind]
        return b"".join([d[cut:] for d in chunk_set.parts]), kind

    def _adopt(self, peer, msg_id: int, npm_set: ChunkSet) -> None:
        """A new npm-gelf set from a sender not seen before: chunks of it that
        arrived before its first chunk were read as the spec format; move them."""
        for key in list(self._spec_keys.get(peer, ())):
            spec_set = self.sets[key]
            for i, d in enumerate(spec_set.parts):
                if d is not None and d[2] == msg_id and d[4] == npm_set.count and d[3] < d[4] \
                        and npm_set.parts[d[3]] is None:
                    npm_set.parts[d[3]] = d
                    npm_set.got += 1
                    npm_set.size += len(d)
                    spec_set.parts[i] = None
                    spec_set.got -= 1
                    spec_set.size -= len(d)
            if spec_set.got == 0:
                self._remove(key)

    def _remove(self, key) -> ChunkSet:
        chunk_set = self.sets.pop(key)
        self.bytes -= chunk_set.size
        if chunk_set.kind is SPEC:
            keys = self._spec_keys[key[0]]
            keys.discard(key)
            if not keys:
                del self._spec_keys[key[0]]
        return chunk_set

    def _drop(self, key, reason: str) -> None:
        self._remove(key)
        self._on_drop(reason)

    def _evict(self, reason: str, skip=None) -> None:
        for key in self.sets:
            if key != skip:
                self._drop(key, reason)
                return

    def expire(self, now_ns: int) -> int:
        """Drop sets whose time is up; returns how many."""
        sets = self.sets
        n = 0
        deadline = now_ns - self.timeout_ns
        while sets:
            key = next(iter(sets))
            if sets[key].born > deadline:
                break
            self._drop(key, "chunk_timeout")
            n += 1
        return n

    def clear(self) -> int:
        n = len(self.sets)
        for key in list(self.sets):
            self._drop(key, "chunk_incomplete_at_stop")
        return n
