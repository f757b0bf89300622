"""`otel-mta trace-id`, run as an operator runs it, against a real sidecar
process that received ZoneMTA's remote log (ZoneMTA's own encoder): the id it
prints is the trace id the sidecar really exported for that message."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from otel_mta import ids
from tests.backends.servers import Jaeger, http_get

MID = "<20261126173700.4f2a@Mail.Example.ORG>"
QID = "18c5f3d2a3e0001234"
QUEUED = {"id": QID, "action": "QUEUED", "message-id": MID, "from": "alice@example.org",
          "to": "bob@example.com", "src": "203.0.113.9", "body": 20480, "interface": "feeder"}
ACCEPTED = {"id": QID, "seq": "001", "action": "ACCEPTED", "zone": "default", "from": "alice@example.org",
            "to": "bob@example.com", "mx": "mx1.example.com", "ip": "10.0.0.5",
            "response": "250 2.0.0 OK", "timer": 345, "start": 61, "messageId": MID, "protocol": "smtp"}
# a message without a Message-ID: ZoneMTA writes "<>" and its deliveries carry the queue id
NO_MID_QID = "18c5f3d2a3e0009999"
NO_MID = [{**QUEUED, "id": NO_MID_QID, "message-id": "<>"},
          {**ACCEPTED, "id": NO_MID_QID, "messageId": NO_MID_QID}]


def trace_id(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "K8S_"))}
    return subprocess.run([sys.executable, "-m", "otel_mta", "trace-id", *args], capture_output=True,
                          text=True, env={**base, **(env or {})}, timeout=60)


def wait_for(fn, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while (value := fn()) is None:
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.2)
    return value


def exported_trace_ids(rx, queue_id: str) -> set[str]:
    """Trace ids of the spans the sidecar exported for one queue id."""
    out = set()
    for _, span in rx.received.spans():
        attrs = {kv.key: kv.value.string_value for kv in span.attributes}
        if attrs.get("mta.queue_id") == queue_id:
            out.add(span.trace_id.hex())
    return out


@pytest.fixture
def fed_sidecar(sidecar, js_encode, grpc_receiver):
    sc = sidecar({"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint})
    sc.send(js_encode([QUEUED, ACCEPTED, *NO_MID]))
    grpc_receiver.received.wait_for(
        lambda r: exported_trace_ids(grpc_receiver, QID) and exported_trace_ids(grpc_receiver, NO_MID_QID),
        timeout=15, what="the spans of both messages")
    return sc


def test_a_queue_id_is_resolved_by_the_running_sidecar(fed_sidecar, grpc_receiver):
    exported = exported_trace_ids(grpc_receiver, QID)
    assert len(exported) == 1
    endpoint = f"127.0.0.1:{fed_sidecar.health_port}"
    for given in (QID, QID + ".001"):          # as in the API, and as a log line shows it
        res = trace_id(given, "--endpoint", endpoint)
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines() == list(exported)
        assert f"queue id {QID}" in res.stderr
    # the sidecar's own setting (a listen address) works as the endpoint too
    res = trace_id(QID, env={"OTEL_MTA_HEALTH_ENDPOINT": f"0.0.0.0:{fed_sidecar.health_port}"})
    assert res.returncode == 0 and res.stdout.split() == list(exported), res.stderr


def test_a_message_id_needs_no_sidecar_and_matches_what_was_exported(fed_sidecar, grpc_receiver):
    exported = exported_trace_ids(grpc_receiver, QID)
    for given in (MID, MID.strip("<>"), "  <20261126173700.4f2a@mail.example.org> "):
        res = trace_id(given, "--endpoint", "127.0.0.1:1")   # never asked
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines() == list(exported)
    # a Message-ID that looks like hex is one when the user says so
    res = trace_id("--message-id", "18c5f3d2a3e0001234")
    assert res.stdout.strip() == ids.trace_id_for("18c5f3d2a3e0001234", None).hex()


def test_a_message_without_message_id_is_found_by_its_queue_id(fed_sidecar, grpc_receiver):
    exported = exported_trace_ids(grpc_receiver, NO_MID_QID)
    assert len(exported) == 1
    res = trace_id(NO_MID_QID, "--endpoint", f"127.0.0.1:{fed_sidecar.health_port}")
    # the sidecar saw it queued without a Message-ID: it is traced by its queue id, and the sidecar knows
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == list(exported)
    assert f"queue id {NO_MID_QID}: it has no Message-ID, so it is traced by its queue id" in res.stderr


def test_an_unknown_queue_id_and_an_unreachable_sidecar_say_what_to_do(fed_sidecar):
    res = trace_id("18c5f3d2a3e000ffff", "--endpoint", f"127.0.0.1:{fed_sidecar.health_port}")
    assert res.returncode == 1 and res.stdout == ""
    assert "does not know queue id 18c5f3d2a3e000ffff" in res.stderr and "Traceback" not in res.stderr
    fed_sidecar.terminate()
    res = trace_id(QID, "--endpoint", f"127.0.0.1:{fed_sidecar.health_port}")
    assert res.returncode == 1 and res.stdout == ""
    assert f"cannot reach the sidecar at http://127.0.0.1:{fed_sidecar.health_port} (connection refused)" \
        in res.stderr
    assert "--endpoint or OTEL_MTA_HEALTH_ENDPOINT" in res.stderr and "Traceback" not in res.stderr
    res = trace_id(QID, "--endpoint", "not an endpoint")
    assert res.returncode == 1 and "bad sidecar endpoint 'not an endpoint'" in res.stderr


def test_the_lookup_route_refuses_bad_requests(fed_sidecar):
    base = f"http://127.0.0.1:{fed_sidecar.health_port}/lookup"
    for query in ("", "?queue_id=", "?queue_id=" + "a" * 257):
        status, body = http_get(base + query)
        assert status == 400 and b"give one queue id" in body
    status, body = http_get(f"{base}?queue_id={QID}")
    assert status == 200
    answer = json.loads(body)
    # the trace id, and no message data
    assert answer == {"queue_id": QID, "known": True, "trace_id": ids.trace_id_for(MID, QID).hex(),
                      "traced_by": "message_id"}
    status, body = http_get(f"{base}?queue_id={NO_MID_QID}")
    assert (status, json.loads(body)["traced_by"]) == (200, "id")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(urllib.request.Request(base, method="POST"), timeout=5)


def test_a_url_template_links_to_the_trace_in_a_real_jaeger(sidecar, js_encode, tmp_path):
    jaeger = Jaeger(tmp_path / "jaeger")
    try:
        sc = sidecar({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{jaeger.otlp_grpc_endpoint}"})
        sc.send(js_encode([QUEUED, ACCEPTED]))
        template = jaeger.base + "/api/traces/{trace_id}"
        res = trace_id(QID, "--endpoint", f"127.0.0.1:{sc.health_port}",
                       env={"OTEL_MTA_TRACE_URL_TEMPLATE": template})
        assert res.returncode == 0, res.stderr
        tid, url = res.stdout.splitlines()
        assert url == f"{jaeger.base}/api/traces/{tid}"
        sc.terminate()   # flushes the spans
        found = wait_for(lambda: jaeger.trace(tid), "the trace in Jaeger at the printed link")
        assert {s["operationName"] for s in found["spans"]} >= {"message", "delivery"}
        # the flag wins over the variable; a template without the placeholder is refused
        res = trace_id(MID, "--url-template", "http://grafana/explore?q={trace_id}&x={y}",
                       env={"OTEL_MTA_TRACE_URL_TEMPLATE": template})
        assert res.stdout.splitlines()[1] == f"http://grafana/explore?q={tid}&x={{y}}"
        res = trace_id(MID, "--url-template", "http://jaeger/trace/")
        assert res.returncode == 1 and "has no {trace_id}" in res.stderr
    finally:
        jaeger.stop()


def test_the_readme_examples_are_right():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Find a message", 1)[1].split("\n## ", 1)[0]
    mid, shown = re.search(r"\$ otel-mta trace-id '([^']+)'\n.*\n([0-9a-f]{32})\n", section).groups()
    res = trace_id(mid)
    assert res.returncode == 0 and res.stdout.strip() == shown
    # the Grafana template gives Explore a pane whose TraceQL query is the id
    template = re.search(r"OTEL_MTA_TRACE_URL_TEMPLATE='(https://grafana[^']+)'", section).group(1)
    res = trace_id(mid, "--url-template", template)
    url = urllib.parse.urlsplit(res.stdout.splitlines()[1])
    panes = json.loads(urllib.parse.parse_qs(url.query)["panes"][0])
    [query] = next(iter(panes.values()))["queries"]
    assert query["query"] == shown and query["queryType"] == "traceql"
