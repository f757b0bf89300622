"""A GELF source on a free port, wired to an in-process pipeline whose output is
parsed like a receiver's; and the real npm `gelf` client run with node."""
from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from otel_mta import config
from otel_mta.pipeline import Pipeline
from otel_mta.sources.gelf import GelfSource
from tests.otlp_receiver import REQUEST, Received, attrs

NODE_DIR = Path(__file__).parent / "node"


class Gelf:
    """A running GelfSource and what it produced."""

    def __init__(self, env: dict | None = None):
        self.received = Received()
        env = {"OTEL_MTA_DATA_DIR": "/nonexistent", "OTEL_MTA_GELF_ENDPOINT": "127.0.0.1:0", **(env or {})}
        self.settings = config.load(environ=env)
        self.pipeline = Pipeline(self.settings, self._submit)
        self.source = GelfSource(self.pipeline, self.settings.sources.gelf)

    def _submit(self, signal: str, payload: bytes, count: int) -> None:
        self.received.add(signal, REQUEST[signal].FromString(payload))

    @property
    def port(self) -> int:
        return self.source.port

    async def records(self, n: int, timeout: float = 10.0) -> list:
        """Wait until n log records arrived (flushing the batcher), then return
        [(resource attrs, attributes dict, LogRecord)]; fails on more or fewer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.pipeline.flush()
            got = self.received.log_records()
            if len(got) >= n or loop.time() > deadline:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # anything beyond n would show up now
        self.pipeline.flush()
        got = self.received.log_records()
        assert len(got) == n, f"expected {n} log records, got {len(got)}: {[r.body.string_value[:60] for _, r in got]}"
        return [(res, attrs(r.attributes), r) for res, r in got]

    def export_metrics(self) -> None:
        self.source.flush_counts()
        collected = self.pipeline.metrics.collect()
        if collected:
            self._submit("metrics", collected[0], collected[1])

    def counter(self, name: str) -> dict:
        """{attribute values tuple: value} of a counter, over all resources."""
        self.source.flush_counts()
        out: dict = {}
        for (_, values), v in self.pipeline.metrics.counter(name).series.items():
            out[values] = out.get(values, 0) + v
        return out

    def refused(self) -> dict:
        return {v[2]: n for v, n in self.counter("otelmta_receiver_refused_records").items()}

    def dropped(self) -> dict:
        return {v[2]: n for v, n in self.counter("otelmta_receiver_dropped_records").items()}


@pytest.fixture
async def gelf():
    made = []

    async def start(env: dict | None = None) -> Gelf:
        g = Gelf(env)
        await g.source.start()
        made.append(g)
        return g

    yield start
    for g in made:
        if g.source.ready:
            await g.source.stop()


def _ensure_node_modules() -> None:
    if not (NODE_DIR / "node_modules" / "gelf").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, check=True)


async def node_gelf_send(port: int, messages: list[dict], connection: str = "lan", **options) -> None:
    """Send with the npm `gelf` package (2.0.1, as ZoneMTA and WildDuck do)."""
    _ensure_node_modules()
    opts = {"graylogPort": port, "graylogHostname": "127.0.0.1", "connection": connection, **options}
    proc = await asyncio.create_subprocess_exec(
        "node", str(NODE_DIR / "send.js"), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(json.dumps({"options": opts, "messages": messages}).encode()), 60)
    assert proc.returncode == 0, err.decode()
