"""What one poll costs: wall time and the sidecar's CPU time per poll, for each
poller against the test stack's real servers. Not a test; run it with

    .venv/bin/python -m tests.pollers.measure [--polls 10] [--queue 1000]

`--queue` puts that many ZoneMTA-shaped deliveries (under ZoneMTA's indexes)
into a FerretDB database for the MongoDB poller's queue queries. FerretDB v1
(SQLite) plans no index, so its MongoDB numbers are an upper bound, not what
a real mongod takes.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from otel_mta import config
from otel_mta.pipeline import Pipeline
from otel_mta.sources.host import HostPoller
from otel_mta.sources.mongodb import MongoDBPoller
from otel_mta.sources.redis import RedisPoller
from otel_mta.sources.zonemta_api import ZoneMTAApiPoller
from tests.stack import paths
from tests.stack.ferretdb import FerretDB
from tests.stack.redis_server import RedisServer
from tests.stack.smtp_sink import SmtpSink
from tests.stack.zonemta import ZoneMTA


async def measure(poller, polls: int) -> tuple[float, float]:
    proc = psutil.Process()
    walls, cpus = [], []
    for _ in range(polls):
        c0, t0 = proc.cpu_times(), time.perf_counter()
        assert await poller.poll_once(), poller.last_error
        c1, t1 = proc.cpu_times(), time.perf_counter()
        walls.append(t1 - t0)
        cpus.append((c1.user + c1.system) - (c0.user + c0.system))
    await poller.close()
    return statistics.median(walls) * 1000, statistics.mean(cpus) * 1000


def fill_queue(ferretdb: FerretDB, n: int) -> str:
    db = "measure-zone-mta"
    coll = ferretdb.client()[db]["zone-queue"]
    coll.drop()
    indexes = yaml.safe_load((paths.zonemta_dir() / "indexes.yaml").read_text())["indexes"]
    for i in indexes:
        if i.get("key") == "collection":
            coll.create_index([(k, 1) for k in i["index"]["key"]], name=i["index"]["name"])
    now = dt.datetime.now(dt.timezone.utc)
    docs = [{"id": f"{i:018x}", "seq": "001", "domain": f"d{i % 50}.example", "sendingZone": f"zone{i % 4}",
             "recipient": f"r{i}@d{i % 50}.example", "locked": False, "lockTime": 0, "assigned": "no",
             "queued": now + dt.timedelta(seconds=(600 if i % 3 else -5)),
             "created": now - dt.timedelta(seconds=i)} for i in range(n)]
    for start in range(0, n, 1000):
        coll.insert_many(docs[start:start + 1000])
    return db


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--polls", type=int, default=10)
    ap.add_argument("--queue", type=int, default=1000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="measure-pollers-"))
    redis, ferretdb, sink = RedisServer(tmp / "redis"), FerretDB(tmp / "ferretdb"), SmtpSink()
    zonemta = ZoneMTA(tmp / "zonemta", mongo_uri=ferretdb.uri, redis_host=redis.host, redis_port=redis.port,
                      sink_host=sink.host, sink_port=sink.port)
    try:
        settings = config.load(environ={"OTEL_MTA_DATA_DIR": str(tmp)})
        pipeline = Pipeline(settings, lambda *a: None)
        db = fill_queue(ferretdb, args.queue)
        rows = [
            ("zonemta_api (real ZoneMTA 3.11, 2 zones)",
             ZoneMTAApiPoller(pipeline, config.ZoneMTAApiSettings(url=zonemta.api_url))),
            ("redis (INFO)", RedisPoller(pipeline, config.RedisSettings(url=redis.url()))),
            (f"mongodb on FerretDB, queue of {args.queue}",
             MongoDBPoller(pipeline, config.MongoDBSettings(url=ferretdb.uri + db, timeout="120s"))),
            ("host (psutil)", HostPoller(pipeline, config.HostSettings())),
        ]
        print(f"{'poller':45} {'wall ms (median)':>17} {'CPU ms/poll':>12}")
        for label, poller in rows:
            wall, cpu = await measure(poller, args.polls)
            print(f"{label:45} {wall:17.1f} {cpu:12.1f}")
    finally:
        zonemta.stop()
        sink.stop()
        redis.stop()
        ferretdb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
