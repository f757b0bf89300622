"""The sidecar as an operator runs it beside the real WildDuck and the real
ZoneMTA (tests/stack, one FerretDB): WildDuck's GELF, its /metrics and its
users collection, ZoneMTA's remote log.

Mail for a WildDuck account that forwards it goes in over LMTP; WildDuck
queues the copy in ZoneMTA's queue (its maildropper writes ZoneMTA's MongoDB
directly), ZoneMTA delivers it to the SMTP sink. WildDuck's forward log and
ZoneMTA's delivery are one trace, by the Message-ID. (WildDuck cannot store
the local copy on FerretDB, so LMTP answers 450 after the forward: see
tests/stack/wildduck.py.)
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from otel_mta import ids
from tests.conftest import free_port
from tests.otlp_receiver import value_of

MID = "<Chain-1@Remote.Example>"
FAST = """\
sources:
  wildduck_metrics: {interval: 500ms}
  wildduck_users: {interval: 500ms}
"""


def _points(received, name):
    return [(res, {kv.key: value_of(kv.value) for kv in p.attributes}, p)
            for res, m in received.metrics().get(name, [])
            for p in getattr(m, m.WhichOneof("data")).data_points]


def test_wildduck_forward_and_zonemta_delivery_are_one_trace(sidecar, grpc_receiver, zonemta_factory,
                                                             wildduck_factory, smtp_sink, tmp_path):
    gelf_port, remote_log_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    zm = zonemta_factory(remote_log_port=remote_log_port)
    wd = wildduck_factory(gelf_port=gelf_port, sender_db=zm.mongo_db)
    cfg = tmp_path / "otel-mta.yaml"
    cfg.write_text(FAST)
    sc = sidecar({"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "500",
                  "OTEL_MTA_REMOTE_LOG_ENDPOINT": f"127.0.0.1:{remote_log_port}",
                  "OTEL_MTA_GELF_ENDPOINT": f"127.0.0.1:{gelf_port}",
                  "OTEL_MTA_WILDDUCK_METRICS_URL": wd.metrics_url,
                  "OTEL_MTA_WILDDUCK_MONGODB_URI": wd.mongo_uri}, config=cfg)
    wd.create_user("fwd", "secret-pass-2", "fwd@example.com", targets=["outside@elsewhere.example"])
    result = wd.lmtp_send("sender@remote.example", ["fwd@example.com"],
                          f"From: sender@remote.example\nTo: fwd@example.com\nSubject: chain\n"
                          f"Message-ID: {MID}\n\nhello\n")
    assert result["fwd@example.com"][0] == 250, result
    smtp_sink.wait_for_messages(1)
    assert smtp_sink.messages[0].rcpt_tos == ["outside@elsewhere.example"]
    assert smtp_sink.messages[0].message["Message-ID"] == MID
    trace = ids.trace_id_for(MID, None)
    rx = grpc_receiver.received

    def in_trace(r):
        logs = [(res, rec) for res, rec in r.log_records() if rec.trace_id == trace]
        spans = [(res, s) for res, s in r.spans() if s.trace_id == trace]
        return (any(res["service.name"] == "wildduck" for res, _ in logs)
                and any(s.name == "delivery" for _, s in spans)
                and r.metrics().get("wildduck.user.count") and r.metrics().get("wildduck.lmtp.recipients")
                and (logs, spans))

    logs, spans = rx.wait_for(in_trace, timeout=60, what="WildDuck's forward log and ZoneMTA's delivery span")
    (_, forward), = [(res, rec) for res, rec in logs if res["service.name"] == "wildduck"]
    a = {kv.key: value_of(kv.value) for kv in forward.attributes}
    assert forward.body.string_value == "WILDDUCK [FRWRDOK] Scheduled forwarding"
    assert a["wildduck.action"] == "forward" and a["wildduck.result"] == "success"
    qid = a["wildduck.forward.queue_id"]
    delivery = next(s for _, s in spans if s.name == "delivery")
    assert {kv.key: value_of(kv.value) for kv in delivery.attributes}["mta.queue_id"] == qid
    assert all(res["service.name"] == "zonemta" for res, _ in spans)
    # the same WildDuck seen through /metrics and its users collection
    lmtp = {a["wildduck.lmtp.result"]: p.as_int for _, a, p in _points(rx, "wildduck.lmtp.recipients")}
    assert lmtp == {"accepted": 1}
    users = _points(rx, "wildduck.user.count")
    assert users[-1][0]["service.name"] == "wildduck" and users[-1][2].as_int == 1
    up = {a["poller"]: p.as_int for _, a, p in _points(rx, "otelmta_poller_up")}
    assert up["wildduck_metrics"] == up["wildduck_users"] == 1
    assert sc.terminate() == 0
    assert "Traceback" not in sc.output()

    # `otel-mta check`: a row per WildDuck poller
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "K8S_"))}
    check = subprocess.run(
        [sys.executable, "-m", "otel_mta", "check"], capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={**base, "OTEL_MTA_REMOTE_LOG_ENDPOINT": "127.0.0.1:0", "OTEL_MTA_GELF_ENDPOINT": "off",
             "OTEL_MTA_EVENTS_ENDPOINT": "off", "OTEL_MTA_ZONEMTA_API_URL": "off", "OTEL_MTA_HOST_METRICS": "off",
             "OTEL_MTA_DATA_DIR": str(tmp_path / "data"), "OTEL_MTA_WILDDUCK_METRICS_URL": wd.metrics_url,
             "OTEL_MTA_WILDDUCK_MONGODB_URI": wd.mongo_uri})
    assert check.returncode == 0, check.stdout + check.stderr
    rows = {line.split()[0]: line for line in check.stdout.splitlines()[1:] if line.strip()}
    assert f"WildDuck {wd.version};" in rows["wildduck_metrics"]
    assert f"{wd.mongo_db}.users: 1 users, 0 bytes in use" in rows["wildduck_users"]
