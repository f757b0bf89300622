#!/usr/bin/env python3
"""CPU per poll of WildDuck's /metrics: the page recorded from the real
WildDuck 1.51.1 (tests/pollers/testdata/wildduck/metrics.txt) parsed, mapped
to wildduck.* and published, beside the baseline in the same run:
prometheus_client's parse of the same page alone (what any Prometheus
scraper pays); and, for scale, the parse of ZoneMTA's recorded page. No
network: the HTTP GET is replaced by the recorded body.

    python bench/wildduck_poll.py [--polls 300]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_mta import config  # noqa: E402
from otel_mta.pipeline import Pipeline  # noqa: E402
from otel_mta.sources import prometheus  # noqa: E402
from otel_mta.sources.poller import Points  # noqa: E402
from otel_mta.sources.wildduck_metrics import WildDuckMetricsPoller  # noqa: E402

TESTDATA = ROOT / "tests" / "pollers" / "testdata"


def ms_per(fn, n: int) -> float:
    best = []
    for _ in range(3):
        t = time.process_time()
        for _ in range(n):
            fn()
        best.append((time.process_time() - t) / n * 1e3)
    return sorted(best)[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--polls", type=int, default=300)
    n = ap.parse_args().polls
    body = (TESTDATA / "wildduck" / "metrics.txt").read_bytes()
    settings = config.load(environ={"OTEL_MTA_DATA_DIR": "/nonexistent"})
    pipeline = Pipeline(settings, lambda *a: None)
    poller = WildDuckMetricsPoller(pipeline, config.WildDuckMetricsSettings(url="http://127.0.0.1:8081/metrics"))

    async def recorded(path: str = "") -> bytes:
        return body
    poller.http.get = recorded
    loop = asyncio.new_event_loop()

    def poll() -> None:
        points = Points()
        loop.run_until_complete(poller.collect(points))
        poller._publish(points)

    zonemta = (TESTDATA / "zonemta" / "metrics.txt").read_bytes()
    parse = ms_per(lambda: prometheus.parse(body, "/metrics"), n)
    full = ms_per(poll, n)
    zparse = ms_per(lambda: prometheus.parse(zonemta, "/metrics"), n)
    print(f"WildDuck page: {len(body)} bytes, {body.count(10)} lines, {poller.summary()}")
    print(f"  poll (parse + map + publish): {full:.2f} ms CPU")
    print(f"  baseline, prometheus_client parse alone: {parse:.2f} ms CPU ({full / parse:.2f}x)")
    print(f"  at the default 15 s interval: {full / 15000 * 100:.3f} % of one core")
    print(f"ZoneMTA page for scale: {len(zonemta)} bytes, parse {zparse:.2f} ms CPU")
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
