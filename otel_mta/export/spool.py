"""An on-disk FIFO of export requests for collector outages, bounded in bytes.

Requests are appended to segment files (zlib-compressed, length-prefixed) and
read back oldest first. A segment is deleted once all of it has been handed
out, so a crash can resend at most one segment (delivery is at least once).
Segments left by a previous run are replayed first.
"""
from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

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
        self._next = (int(self._segments[-1].stem.split("-")[1]) + 1) if self._segments else 0
        self._writer = None
        self._write_path: Path | None = None
        self._reading: list = []          # items of the segment being read
        self.size = sum(p.stat().st_size for p in self._segments)
        self.items = self._count_items()
        self.corrupt = 0

    def _count_items(self) -> int:
        return sum(1 for p in self._segments for _ in self._records(p))

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

    def _records(self, path: Path):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos + _HEADER.size <= len(data):
            length, code, count = _HEADER.unpack_from(data, pos)
            pos += _HEADER.size
            if pos + length > len(data) or code >= len(SIGNALS):
                self.corrupt += 1  # a record cut short by a crash: the rest is unreadable
                return
            try:
                payload = zlib.decompress(data[pos:pos + length])
            except zlib.error:
                self.corrupt += 1
                return
            pos += length
            yield SIGNALS[code], payload, count

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
                self._write_path = None
