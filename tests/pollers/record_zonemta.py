"""Records the real ZoneMTA's API answers into testdata/zonemta/ for the fast
fixture-server tests (test_zonemta_api.py). Run after `make setup-stack`:

    .venv/bin/python -m tests.pollers.record_zonemta

It starts the real ZoneMTA of tests/stack (FerretDB, Redis, an SMTP sink),
sends one message that is delivered, one the sink defers (451) and one it
rejects (550, so ZoneMTA generates a bounce), waits for ZoneMTA's own queue
gauge to refresh, and saves /zones, /counter/zone/<zone> and /metrics as
ZoneMTA served them. test_zonemta_api.py checks that the live answers still
have the recorded shapes.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from tests.stack.ferretdb import FerretDB
from tests.stack.redis_server import RedisServer
from tests.stack.smtp_sink import SmtpSink
from tests.stack.zonemta import ZoneMTA

OUT = Path(__file__).resolve().parent / "testdata" / "zonemta"


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="record-zonemta-"))
    fdb = FerretDB(tmp / "ferretdb")
    sink, redis = SmtpSink(), RedisServer(tmp / "redis")
    zm = ZoneMTA(tmp / "zonemta", mongo_uri=fdb.uri, redis_host=redis.host, redis_port=redis.port,
                 sink_host=sink.host, sink_port=sink.port)
    try:
        sink.reply("later", "451 4.3.0 Try again later")
        sink.reply("nobody", "550 5.1.1 No such user")
        zm.send("sender@example.com", ["ok@example.net"])
        zm.send("sender@example.com", ["later@example.org"])
        zm.send("sender@example.com", ["nobody@example.org"])
        sink.wait_for_messages(1)
        sink.wait_for_refused(2)
        deadline = time.time() + 30
        while zm.metric("zonemta_queue_size", type="deferred") is None and time.time() < deadline:
            time.sleep(1)   # ZoneMTA refreshes its queue gauge every 10 s
        OUT.mkdir(parents=True, exist_ok=True)
        status, body = zm.api_get("/zones")
        assert status == 200, status
        (OUT / "zones.json").write_bytes(body + b"\n")
        zones = json.loads(body)
        for z in zones:
            status, body = zm.api_get(f"/counter/zone/{z['name']}")
            assert status == 200, (z, status)
            (OUT / f"counter_{z['name']}.json").write_bytes(body + b"\n")
        (OUT / "metrics.txt").write_text(zm.metrics_text())
        (OUT / "VERSION").write_text(f"ZoneMTA {zm.version}, recorded {time.strftime('%Y-%m-%d')}\n")
        print(f"recorded ZoneMTA {zm.version} into {OUT}", file=sys.stderr)
    finally:
        zm.stop()
        redis.stop()
        sink.stop()
        fdb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
