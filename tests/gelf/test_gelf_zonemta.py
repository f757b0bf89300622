"""The real ZoneMTA (tests/stack: 3.11 on Node 22, FerretDB, Redis) logging to
the sidecar process over both its channels: remote log and GELF. ZoneMTA's GELF
error event for a delivery must land in the trace of the message that its
remote-log entries describe."""
from __future__ import annotations

import socket

from tests.conftest import free_port
from tests.stack.test_stack_smoke import SENDER


def test_zonemta_gelf_error_joins_its_remote_log_trace(sidecar, grpc_receiver, zonemta_factory):
    gelf_port = free_port(socket.SOCK_DGRAM)
    sc = sidecar({"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint,
                  "OTEL_MTA_GELF_ENDPOINT": f"127.0.0.1:{gelf_port}", "OTEL_METRIC_EXPORT_INTERVAL": "500"})
    closed = free_port()   # the zone points at a closed port: MX_CONNECT_ERROR over GELF, DEFERRED in the remote log
    zm = zonemta_factory(gelf_port=gelf_port, remote_log_port=sc.remote_log_port,
                         config={"zones": {"default": {"port": closed}}})
    zm.send(SENDER, ["dave@rcpt.test"])
    rx = grpc_receiver.received

    def logs(r):
        return [(res, {kv.key: kv.value for kv in rec.attributes}, rec) for res, rec in r.log_records()]

    def ready(r):
        recs = logs(r)
        return (any("zonemta.code" in a for _, a, _ in recs)
                and any(a.get("mta.action") and a["mta.action"].string_value == "DEFERRED" for _, a, _ in recs)
                and r.metrics().get("zonemta.errors"))
    rx.wait_for(ready, timeout=60, what="ZoneMTA's GELF error, its DEFERRED entry and zonemta.errors")
    recs = logs(rx)
    res, a, err = next(x for x in recs if "zonemta.code" in x[1] and x[1]["zonemta.code"].string_value
                       in ("MX_CONNECT_ERROR", "MX_CONNECT_FAILED"))
    _, _, deferred = next(x for x in recs if "mta.action" in x[1] and x[1]["mta.action"].string_value == "DEFERRED")
    assert res["service.name"] == "zonemta"
    assert err.body.string_value.startswith("MTA [MX_CONNECT_")
    assert "dave@" not in str(a)
    assert err.trace_id == deferred.trace_id and len(err.trace_id) == 16
    assert sc.terminate() == 0
