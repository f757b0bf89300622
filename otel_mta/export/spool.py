"""An on-disk FIFO of export requests for collector outages, bounded in bytes.

Requests are appended to segment files (zlib-compressed, length-prefixed) and
read back oldest first. A segment is deleted once all of it has been handed
out, so a crash can resend at most one segment (delivery is at least once).
Segments left by a previous run are replayed first.
"""
from __future__ import annotations

import logging
import struct
import threading
import zlib
from pathlib import Path

log = logging.getLogger("otel_mta.export")
_HEADER = struct.Struct("<IBI")  # compressed length, signal code, item count
SIGNALS = ("logs", "traces", "metrics")


class Spool:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = 8 << 20):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._segments = sorted(self.dir.glob("segment-*.spool"))
        # numbers start high so that prepend() can always go below the first
        self._next = (int(self._segments[-1].stem.split("-")[1]) + 1) if self._segments else 10**9
        self._writer = None
        self._write_path: Path | None = None
        self._reading: list = []          # items of the segment being read
        self.size = sum(p.stat().st_size for p in self._segments)
        self.corrupt = 0          # records lost to a torn write (a crash mid-append)
        self.items = sum(1 for p in self._segments for _ in self._records(p, count_corrupt=False))

    def __len__(self) -> int:
        return self.items

    def append(self, signal: str, payload: bytes, count: int) -> bool:
        """Spool one request; False when the spool is full."""
        data = zlib.compress(payload, 1)
        record = _HEADER.pack(len(data), SIGNALS.index(signal), count) + data
        with self._lock:
            if self.size + len(record) > self.max_bytes:
                return False
            if self._writer is None or self._writer.tell() >= self.segment_bytes:
                self._rotate()
            self._writer.write(record)
            self._writer.flush()
            self.size += len(record)
            self.items += 1
            return True

    def prepend(self, items: list) -> bool:
        """Put (signal, payload, count) items before everything spooled, in order.

        At shutdown the exporter hands back what it could not send: the request
        it was retrying and what waited in memory, all older than the spool.
        The unsent rest of the segment being read goes right after them.
        """
        with self._lock:
            rest = list(reversed(self._reading))
            records = [_HEADER.pack(len(d), SIGNALS.index(sig), c) + d
                       for sig, d, c in ((sig, zlib.compress(p, 1), c) for sig, p, c in list(items) + rest)]
            size = sum(map(len, records))
            if not records:
                return True
            if self.size + size > self.max_bytes and items:
                return False
            first = int(self._segments[0].stem.split("-")[1]) if self._segments else self._next
            path = self.dir / f"segment-{first - 1:012d}.spool"
            with open(path, "wb") as f:
                f.write(b"".join(records))
            self._segments.insert(0, path)
            self._reading = []
            self.size += size
            self.items += len(items)
            return True

    def _rotate(self) -> None:
        if self._writer is not None:
            self._writer.close()
        path = self.dir / f"segment-{self._next:012d}.spool"
        self._next += 1
        self._writer = open(path, "ab")
        self._write_path = path
        self._segments.append(path)

    def pop(self):
        """The oldest spooled (signal, payload, count), or None."""
        with self._lock:
            while not self._reading:
                if not self._segments:
                    return None
                path = self._segments[0]
                if path == self._write_path:
                    self._writer.close()
                    self._writer = None
                    self._write_path = None
                self._segments.pop(0)
                self._reading = list(self._records(path))
                self.size -= path.stat().st_size
                path.unlink()
                self._reading.reverse()
            self.items -= 1
            return self._reading.pop()

    def _records(self, path: Path, count_corrupt: bool = True):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos + _HEADER.size <= len(data):
            length, code, count = _HEADER.unpack_from(data, pos)
            pos += _HEADER.size
            try:
                if pos + length > len(data) or code >= len(SIGNALS):
                    raise zlib.error("record cut short")
                payload = zlib.decompress(data[pos:pos + length])
            except zlib.error:  # a record torn by a crash: the rest of the segment is unreadable
                if count_corrupt:
                    self.corrupt += 1
                    log.warning("spool segment %s: a record torn by a crash; its last %d bytes are lost",
                                path.name, len(data) - pos + _HEADER.size)
                return
            pos += length
            yield SIGNALS[code], payload, count

    def close(self) -> None:
        self.prepend([])  # keep the unsent rest of the segment being read
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
                self._write_path = None
