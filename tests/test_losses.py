"""Every loss is visible: what the sidecar's bounded tables forget, what the
metric store folds away and what the spool cannot read back are exported as
self-metrics (catalog/self.yaml), not only counted inside the process."""
from __future__ import annotations

import json
from pathlib import Path

from otel_mta import config
from otel_mta.pipeline import Pipeline
from otel_mta.sources.remote_log import RemoteLogSource
from tests.otlp_receiver import REQUEST, Received

ENTRIES = [json.loads(l) for l in (Path(__file__).parent / "fixtures" / "remote_log" / "entries.jsonl")
           .read_text().splitlines()]
QUEUED = next(e for e in ENTRIES if e["action"] == "QUEUED")
ACCEPTED = next(e for e in ENTRIES if e["action"] == "ACCEPTED")


def pipeline(tmp_path, yaml_text: str = "", env: dict | None = None):
    cfg = tmp_path / "otel-mta.yaml"
    cfg.write_text(yaml_text)
    settings = config.load(cfg, environ={"OTEL_MTA_DATA_DIR": str(tmp_path / "data"), **(env or {})})
    rx = Received()
    p = Pipeline(settings, lambda signal, payload, n: rx.add(signal, REQUEST[signal].FromString(payload)))
    return settings, p, rx


def collect(p, rx):
    payload, _ = p.metrics.collect()
    rx.add("metrics", REQUEST["metrics"].FromString(payload))
    return rx


def test_evictions_of_the_correlation_tables_are_counted(tmp_path, js_encode):
    """300 messages through a 100-entry queue-id index and a 100-root table,
    and 5 attempt spans through a 2-entry table of spans waiting for late
    plugin phases: each forgotten entry is counted, by table."""
    from otel_mta.correlate import BoundedMap
    settings, p, rx = pipeline(tmp_path, "correlation:\n  index_size: 100\n  max_open_roots: 100\n")
    src = RemoteLogSource(p, settings.sources.remote_log)
    queued = [{**QUEUED, "id": f"18c5f3d2a3e{n:07x}", "message-id": f"<m{n}@example.org>"} for n in range(300)]
    for d in js_encode(queued):
        src.handle_datagram(d)
    p.mail._attempts = BoundedMap(2)    # small, to be filled by a handful
    p.mail.expect_phases()              # as while a plugin reports: attempt spans wait for late phases
    for d in js_encode([{**ACCEPTED, "seq": f"{i:03x}"} for i in range(1, 6)]):
        src.handle_datagram(d)
    p.mail.tick(flush_all=True)
    evicted = {a["table"]: pt.as_int for a, pt in collect(p, rx).last_points("otelmta_correlation_evicted")}
    # the index keeps at least the latest half of its size: 301 queue ids in (the ACCEPTED one too), 51 kept
    assert evicted == {"queue_ids": 250, "root_spans": 200, "attempts": 3, "gelf_hints": 0}
    assert len(p.mail.corr.index) == 51


def test_measurements_beyond_max_series_are_counted_by_metric(tmp_path, js_encode):
    settings, p, rx = pipeline(tmp_path, "metrics:\n  max_series: 10\n")
    src = RemoteLogSource(p, settings.sources.remote_log)
    entries = [{**ACCEPTED, "seq": f"{i:03x}", "zone": f"zone-{i}"} for i in range(1, 26)]  # 25 zones
    for d in js_encode(entries):
        src.handle_datagram(d)
    over = {a["metric"]: pt.as_int for a, pt in collect(p, rx).last_points("otelmta_metric_points_overflowed")}
    # mta.delivery.attempts is counted per entry and added up before each export: 15 of its 25 series folded
    assert over["mta.delivery.attempts"] == 15 and over["mta.delivery.duration"] == 15
    [fold] = [pt for a, pt in rx.last_points("mta.delivery.attempts") if a.get("otel.metric.overflow")]
    assert fold.as_int == 15


def test_spool_segments_torn_by_a_crash_are_counted(tmp_path):
    """A spool segment whose last record a crash cut short: when the exporter
    reads it back, the loss is exported as otelmta_exporter_spool_corrupt."""
    from otel_mta.app import App
    from otel_mta.export.spool import Spool
    from otel_mta.signals import logs as L, wire
    from tests.conftest import free_port
    data = tmp_path / "data"
    spool = Spool(data / "spool", 1 << 20)
    for n in range(3):
        rec = L.encode_log(1, 1, L.INFO, f"r{n}", b"")
        spool.append("logs", wire.request([(b"", wire.scope("s", "1"), [rec])]), 1)
    spool.close()
    seg = next((data / "spool" / "logs").glob("*.spool"))   # one folder per signal
    seg.write_bytes(seg.read_bytes()[:-5])
    settings = config.load(environ={"OTEL_MTA_DATA_DIR": str(data), "OTEL_MTA_SPOOL": "true",
                                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                                    "OTEL_MTA_HEALTH_ENDPOINT": "off"})
    app = App(settings)
    try:
        replayed = []
        while (item := app.exporter.queue.get("logs")) is not None:   # what the logs lane reads back
            replayed.append(item)
        assert len(replayed) == 2
        rx = collect(app.pipeline, Received())
        [(a, pt)] = rx.last_points("otelmta_exporter_spool_corrupt")
        assert a == {"exporter": "otlp_grpc"} and pt.as_int == 1
    finally:
        app.exporter.sender.close()


def test_a_gelf_message_whose_chunks_never_all_come_is_a_counted_loss(tmp_path):
    """A real loss is exported in otelmta_receiver_dropped_records (which no
    longer counts duplicates): here the first of two GELF chunks, alone."""
    import os
    import time
    from otel_mta.sources.gelf import GelfSource
    settings, p, rx = pipeline(tmp_path)
    src = GelfSource(p, settings.sources.gelf)
    first = b"\x1e\x0f" + os.urandom(8) + bytes([0, 2]) + b'{"short_message": "half of i'
    src.handle_datagram(first, ("192.0.2.1", 5000))
    src.chunks.expire(time.monotonic_ns() + int(settings.sources.gelf.chunk_timeout * 1e9) + 1)
    dropped = {(a["receiver"], a["reason"]): pt.as_int
               for a, pt in collect(p, rx).last_points("otelmta_receiver_dropped_records")}
    assert dropped == {("gelf", "chunk_timeout"): 1}
    assert not rx.log_records()
