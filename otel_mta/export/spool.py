"""An on-disk FIFO of export requests for collector outages, bounded in bytes.

One FIFO per signal (`<dir>/logs`, `traces`, `metrics`), so each export lane
replays its own in order while another waits for its backend; the FIFOs share
the disk bound as the lanes share memory (queue.Budget). Requests are appended
to segment files (zlib-compressed, length-prefixed) and read back oldest
first. A segment is deleted once all of it has been handed out, so a crash can
resend at most one segment (delivery is at least once). Segments left by a
previous run are replayed first; those of versions that kept one FIFO for all
signals (segments in `<dir>` itself) are sorted into the signals' FIFOs.
"""
from __future__ import annotations

import logging
import struct
import threading
import zlib
from pathlib import Path

from otel_mta.export.budget import SIGNALS, Budget

log = logging.getLogger("otel_mta.export")
_HEADER = struct.Struct("<IBI")  # compressed length, signal code, item count


def _record(signal: str, payload: bytes, count: int) -> bytes:
    data = zlib.compress(payload, 1)
    return _HEADER.pack(len(data), SIGNALS.index(signal), count) + data


class _Fifo:
    """One signal's segments. The Spool holds the lock."""

    def __init__(self, directory: Path, segment_bytes: int):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.segments = sorted(self.dir.glob("segment-*.spool"))
        # numbers start high so that prepend() can always go below the first
        self.next = (int(self.segments[-1].stem.split("-")[1]) + 1) if self.segments else 10**9
        self.writer = None
        self.write_path: Path | None = None
        self.reading: list = []   # items of the segment being read, last first
        self.size = sum(p.stat().st_size for p in self.segments)
        self.items = 0

    def write(self, record: bytes) -> None:
        if self.writer is None or self.writer.tell() >= self.segment_bytes:
            if self.writer is not None:
                self.writer.close()
            self.write_path = self.dir / f"segment-{self.next:012d}.spool"
            self.next += 1
            self.writer = open(self.write_path, "ab")
            self.segments.append(self.write_path)
        self.writer.write(record)
        self.writer.flush()
        self.size += len(record)
        self.items += 1

    def close_writer(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.write_path = None


class Spool:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = 8 << 20):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.budget = Budget(max_bytes)
        self._lock = threading.Lock()
        self.corrupt = 0          # records lost to a torn write (a crash mid-append)
        self._fifos = {s: _Fifo(self.dir / s, segment_bytes) for s in SIGNALS}
        for signal, fifo in self._fifos.items():
            self.budget.force(signal, fifo.size)
            fifo.items = sum(1 for p in fifo.segments for _ in self._records(p, count_corrupt=False))
        self._sort_legacy()

    @property
    def size(self) -> int:
        """Bytes on disk, all signals."""
        return self.budget.total

    def __len__(self) -> int:
        return sum(f.items for f in self._fifos.values())

    def waiting(self, signal: str) -> int:
        return self._fifos[signal].items

    def _sort_legacy(self) -> None:
        """Segments of one FIFO for all signals, left by an older version."""
        for path in sorted(self.dir.glob("segment-*.spool")):
            moved = 0
            for signal, payload, count in self._records(path):
                record = _record(signal, payload, count)
                self.budget.force(signal, len(record))  # it was within the bound already
                self._fifos[signal].write(record)
                moved += 1
            path.unlink()
            log.info("spool: %d requests of %s moved into the per-signal spools", moved, path.name)

    def append(self, signal: str, payload: bytes, count: int) -> bool:
        """Spool one request; False when the spool is full."""
        record = _record(signal, payload, count)
        with self._lock:
            if not self.budget.take(signal, len(record)):
                return False
            self._fifos[signal].write(record)
            return True

    def prepend(self, signal: str, items: list) -> bool:
        """Put (signal, payload, count) items of one signal before everything
        spooled for it, in order.

        At shutdown an export lane hands back what it could not send: the
        requests it was retrying and what waited in memory, all older than its
        spool. The unsent rest of the segment being read goes right after them.
        """
        with self._lock:
            fifo = self._fifos[signal]
            records = [_record(*item) for item in list(items) + list(reversed(fifo.reading))]
            if not records:
                return True
            new = sum(map(len, records[:len(items)]))
            if items and not self.budget.take(signal, new):
                return False
            first = int(fifo.segments[0].stem.split("-")[1]) if fifo.segments else fifo.next
            path = fifo.dir / f"segment-{first - 1:012d}.spool"
            with open(path, "wb") as f:
                f.write(b"".join(records))
            fifo.segments.insert(0, path)
            fifo.size += sum(map(len, records))
            # the rest of the segment being read was counted (items, bytes) until pop() took its file
            rest = sum(map(len, records[len(items):]))
            self.budget.force(signal, rest)
            fifo.items += len(items)
            fifo.reading = []
            return True

    def pop(self, signal: str):
        """The oldest spooled (signal, payload, count) of that signal, or None."""
        with self._lock:
            fifo = self._fifos[signal]
            while not fifo.reading:
                if not fifo.segments:
                    return None
                path = fifo.segments.pop(0)
                if path == fifo.write_path:
                    fifo.close_writer()
                fifo.reading = list(self._records(path))
                size = path.stat().st_size
                fifo.size -= size
                self.budget.give(signal, size)
                path.unlink()
                fifo.reading.reverse()
            fifo.items -= 1
            return fifo.reading.pop()

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
        for signal, fifo in self._fifos.items():
            self.prepend(signal, [])  # keep the unsent rest of the segment being read
            with self._lock:
                fifo.close_writer()
