"""`otel-mta check`: validate the configuration, try every enabled source and
the exporter once, and print one table row each."""
from __future__ import annotations

import asyncio
import sys
import tempfile

from otel_mta.config import Settings
from otel_mta.export.factory import build_sender
from otel_mta.export.senders import FileSink
from otel_mta.pipeline import Pipeline
from otel_mta.sources import enabled_sources
from otel_mta.sources.base import CheckResult


async def _check_exporter(settings: Settings) -> CheckResult:
    sender = build_sender(settings)
    try:
        if isinstance(sender, FileSink):
            try:
                with tempfile.NamedTemporaryFile(dir=sender.dir):
                    pass
            except OSError as err:
                return CheckResult("exporter", f"file {sender.dir}", False, f"not writable: {err.strerror}")
            return CheckResult("exporter", f"file {sender.dir}", True,
                               "no OTEL_EXPORTER_OTLP_ENDPOINT: OTLP JSON files")
        result = await sender.send_async("logs", b"")  # an empty request: every OTLP receiver accepts it
        name = f"otlp {settings.exporter.protocol} {sender.endpoint}"
        return CheckResult("exporter", name, result.ok, "collector accepted an empty request" if result.ok else result.error)
    finally:
        await sender.aclose()
        sender.close()


async def run_check(settings: Settings) -> int:
    pipeline = Pipeline(settings, lambda *a: None)
    results = list(await asyncio.gather(*(s.check() for s in enabled_sources(settings, pipeline))))
    results.append(await _check_exporter(settings))
    rows = [("SOURCE", "ENDPOINT", "STATUS", "DETAIL")] + [(r.source, r.endpoint, r.status, r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
    bad = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(bad)} ok, {len(bad)} failed" + ("" if bad else ": ready to run"), file=sys.stderr)
    return 1 if bad else 0
