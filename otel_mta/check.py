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


def health_url(settings: Settings) -> str | None:
    """Where a running otel-mta with these settings answers /healthz and /readyz."""
    if not settings.health.endpoint:
        return None
    host, port = settings.health.endpoint
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


async def _readyz(url: str) -> dict | None:
    """The running otel-mta's /readyz answer, or None when nothing answers like one."""
    import aiohttp
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            async with http.get(url + "/readyz") as r:
                doc = await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError, OSError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("sources"), dict) else None


async def explain_ports_in_use(results: list, settings: Settings) -> None:
    """A listener whose port is taken: most likely by the otel-mta running
    here (`check` beside a running sidecar). Its health endpoint tells: then
    the row is ok; otherwise it says which process to look for and where."""
    taken = [r for r in results if r.in_use]
    if not taken:
        return
    url = health_url(settings)
    running = await _readyz(url) if url else None
    for r in taken:
        if running is not None:
            st = running["sources"].get(r.source)
            if isinstance(st, dict) and st.get("ready"):
                r.ok = True
                r.detail = f"port in use by the otel-mta running here ({url}/readyz: {r.source} ready)"
            else:
                r.detail = (f"port in use; the otel-mta answering at {url}/readyz does not serve "
                            f"{r.source}: another process holds the port")
        elif url:
            r.detail = (f"port in use by another process: a running otel-mta would answer at {url}/healthz, "
                        f"and none does (find the holder with `ss -lunpt`)")
        else:
            r.detail = ("port in use by another process (a running otel-mta? it answers at its health "
                        "endpoint, OTEL_MTA_HEALTH_ENDPOINT, which is off here)")


async def run_check(settings: Settings) -> int:
    pipeline = Pipeline(settings, lambda *a: None)
    results = list(await asyncio.gather(*(s.check() for s in enabled_sources(settings, pipeline))))
    await explain_ports_in_use(results, settings)
    results.append(await _check_exporter(settings))
    rows = [("SOURCE", "ENDPOINT", "STATUS", "DETAIL")] + [(r.source, r.endpoint, r.status, r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
    bad = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(bad)} ok, {len(bad)} failed" + ("" if bad else ": ready to run"), file=sys.stderr)
    return 1 if bad else 0
