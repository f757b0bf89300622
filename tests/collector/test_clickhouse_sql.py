"""The shipped delivery-analytics SQL runs on the tables the clickhouse exporter creates.

ClickHouse here is chdb (in-process ClickHouse from PyPI; the engine of a real
server, without its network side). The tables come from the exporter's own DDL
(clickhouse_schema.py); the rows are telemetry shaped like otel-mta's, sent
with the OTel SDK through the real Collector (local.yaml) and mapped to the
exporter's columns.
"""
from __future__ import annotations

import json
import time

import clickhouse_schema as chs
import pytest
from chdb import session as chs_session
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from otelcol_harness import start_collector
from telemetry import RESOURCE, attempt_span, send_spans, trace_id


SQL_DIR = chs.ROOT / "collector-config" / "clickhouse"
NOW = time.time_ns()
H = 3600 * 10**9
S = 10**9

# (ns ago, action, queue id, delivery seq, fields) — one mail story per queue id.
# q1 gmail delivered at once; q2 yahoo deferred twice then delivered;
# q3 one rejected (example.org) and one delivered (gmail) recipient;
# q4 outlook deferred twice, still waiting; q5 is 8 days old (outside every window).
EVENTS = [
    (3 * H, "QUEUED", "q1", None, {}),
    (3 * H - 2 * S, "ACCEPTED", "q1", "001", {"domain": "gmail.com", "ip": "192.0.2.10"}),
    (2 * H, "QUEUED", "q2", None, {}),
    (2 * H - 5 * S, "DEFERRED", "q2", "001", {"domain": "yahoo.com", "ip": "192.0.2.11", "category": "network",
                                             "status": "4.4.1", "response": "451 4.4.1 connection timed out"}),
    (1 * H, "DEFERRED", "q2", "001", {"domain": "yahoo.com", "ip": "192.0.2.11", "category": "network",
                                     "status": "4.4.1", "response": "451 4.4.1 connection timed out"}),
    (600 * S, "ACCEPTED", "q2", "001", {"domain": "yahoo.com", "ip": "192.0.2.11"}),
    (1 * H, "QUEUED", "q3", None, {}),
    (1 * H - 2 * S, "REJECTED", "q3", "001", {"domain": "example.org", "ip": "192.0.2.10", "category": "recipient",
                                             "status": "5.1.1", "response": "550 5.1.1 no such user"}),
    (1 * H - 3 * S, "ACCEPTED", "q3", "002", {"domain": "gmail.com", "ip": "192.0.2.10"}),
    (5 * H, "QUEUED", "q4", None, {}),
    (4 * H, "DEFERRED", "q4", "001", {"domain": "outlook.com", "ip": "192.0.2.12", "category": "policy",
                                     "status": "4.7.0", "response": "421 4.7.0 too many connections"}),
    (1800 * S, "DEFERRED", "q4", "001", {"domain": "outlook.com", "ip": "192.0.2.12", "category": "policy",
                                        "status": "4.7.0", "response": "421 4.7.0 too many connections"}),
    (8 * 24 * H, "QUEUED", "q5", None, {}),
    (8 * 24 * H - S, "ACCEPTED", "q5", "001", {"domain": "gmail.com", "ip": "192.0.2.10"}),
]
OUTCOME = {"ACCEPTED": "delivered", "DEFERRED": "deferred", "REJECTED": "rejected"}


def _emit_logs(col):
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    lp = LoggerProvider(resource=RESOURCE)
    lp.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=col.grpc_endpoint, insecure=True)))
    logger = lp.get_logger("otel-mta")
    for ago, action, qid, seq, f in EVENTS:
        a = {"mta.action": action, "mta.queue_id": qid}
        if seq:
            a.update({"mta.delivery.seq": seq, "mta.delivery.outcome": OUTCOME[action],
                      "mta.recipient.domain": f["domain"], "mta.sending_ip": f["ip"]})
            for key, attr in [("category", "mta.bounce.category"), ("status", "mta.smtp.enhanced_status"),
                              ("response", "mta.smtp.response")]:
                if key in f:
                    a[attr] = f[key]
        else:
            a["mta.recipient.count"] = 1
        logger.emit(timestamp=NOW - ago, body=f"MTA {action}", attributes=a)
    lp.shutdown()


def _spans():
    out = []
    for n, (outcome, mx, secs) in enumerate([("delivered", "gmail.com", 1), ("delivered", "gmail.com", 3),
                                            ("deferred", "yahoo.com", 30), ("rejected", "example.org", 2)]):
        sp = attempt_span(trace_id(f"mid:sql{n}"), f"s{n}", outcome, domain=mx)
        sp._end_time = sp.start_time + secs * S
        out.append(sp)
    return out


@pytest.fixture(scope="module")
def ch(tmp_path_factory, otelcol_bin):
    col = start_collector(otelcol_bin, tmp_path_factory.mktemp("chcol"), ["local.yaml"])
    try:
        _emit_logs(col)
        send_spans(col, _spans())
        logs = col.wait_for(lambda c: sum(len(sl["logRecords"]) for r in c.records("logs")
                                          for rl in r["resourceLogs"] for sl in rl["scopeLogs"]) >= len(EVENTS)
                            and c.records("logs"), what="all log records")
        spans = col.wait_for(lambda c: len(chs.span_rows(c.records("traces"))) >= 4 and c.records("traces"),
                             what="4 spans")
    finally:
        col.stop()
    sess = chs_session.Session(str(tmp_path_factory.mktemp("chdb")))
    version = sess.query("SELECT version()", "CSV").bytes().decode().strip().strip('"')
    major, minor = (int(x) for x in version.split(".")[:2])
    # The exporter itself decides this from the server version (>= 26.2: text indexes).
    for stmt in chs.create_statements(full_text_search=(major, minor) >= (26, 2)):
        sess.query(stmt)
    for table, rows in (("otel_logs", chs.log_rows(logs)), ("otel_traces", chs.span_rows(spans))):
        body = "\n".join(json.dumps(r) for r in rows)
        sess.query(f"INSERT INTO otel.{table} FORMAT JSONEachRow {body}")
    yield sess
    sess.close()


def run(sess, name: str) -> list[dict]:
    sql = (SQL_DIR / name).read_text()
    out = sess.query(sql, "JSONEachRow").bytes().decode()
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_every_sql_file_is_tested():
    tested = {"outcomes_by_domain_and_ip.sql", "deferral_reasons.sql", "attempts_per_message.sql",
              "queue_age.sql", "time_to_delivery.sql", "slow_attempts.sql"}
    assert {p.name for p in SQL_DIR.glob("*.sql")} == tested


def test_exporter_tables_exist(ch):
    tables = ch.query("SELECT name FROM system.tables WHERE database = 'otel' ORDER BY name", "CSV").bytes().decode()
    for t in ["otel_logs", "otel_traces", "otel_traces_trace_id_ts", "otel_traces_trace_id_ts_mv",
              "otel_metrics_gauge", "otel_metrics_sum", "otel_metrics_histogram",
              "otel_metrics_exponential_histogram", "otel_metrics_summary"]:
        assert f'"{t}"' in tables


def test_outcomes_by_domain_and_ip(ch):
    rows = run(ch, "outcomes_by_domain_and_ip.sql")
    got = [(r["recipient_domain"], r["sending_ip"], int(r["attempts"]), int(r["delivered"]),
            int(r["deferred"]), int(r["rejected"])) for r in rows]
    assert got == [
        ("yahoo.com", "192.0.2.11", 3, 1, 2, 0),
        ("gmail.com", "192.0.2.10", 2, 2, 0, 0),   # q5's older delivery is outside 24 h
        ("outlook.com", "192.0.2.12", 2, 0, 2, 0),
        ("example.org", "192.0.2.10", 1, 0, 0, 1),
    ]
    assert rows[0]["delivered_ratio"] == pytest.approx(1 / 3, abs=1e-4)


def test_deferral_reasons(ch):
    rows = run(ch, "deferral_reasons.sql")
    got = [(r["category"], r["enhanced_status"], r["recipient_domain"], int(r["deferrals"]), int(r["recipients"]),
            r["example_response"]) for r in rows]
    assert got == [
        ("network", "4.4.1", "yahoo.com", 2, 1, "451 4.4.1 connection timed out"),
        ("policy", "4.7.0", "outlook.com", 2, 1, "421 4.7.0 too many connections"),
    ]


def test_attempts_per_message(ch):
    rows = run(ch, "attempts_per_message.sql")
    got = [(int(r["attempts"]), r["latest_outcome"], int(r["recipients"]), int(r["messages"])) for r in rows]
    assert got == [(1, "delivered", 2, 2), (1, "rejected", 1, 1), (2, "deferred", 1, 1), (3, "delivered", 1, 1)]


def test_queue_age(ch):
    rows = run(ch, "queue_age.sql")
    # the SQL measures against now(): the events are NOW-relative, and NOW was
    # taken when this module was imported, maybe minutes ago in a long session
    since_import = (time.time_ns() - NOW) / 1e9
    assert [(r["queue_id"], r["seq"], r["recipient_domain"], int(r["attempts"])) for r in rows] == \
        [("q4", "001", "outlook.com", 2)]
    assert abs(int(rows[0]["queue_age_s"]) - 5 * 3600 - since_import) < 120
    assert abs(int(rows[0]["since_last_attempt_s"]) - 1800 - since_import) < 120
    assert rows[0]["latest_response"] == "421 4.7.0 too many connections"


def test_time_to_delivery(ch):
    rows = {r["recipient_domain"]: r for r in run(ch, "time_to_delivery.sql")}
    assert set(rows) == {"gmail.com", "yahoo.com"}
    assert int(rows["gmail.com"]["deliveries"]) == 2
    assert rows["gmail.com"]["max_s"] == pytest.approx(3.0)
    assert int(rows["yahoo.com"]["deliveries"]) == 1
    assert rows["yahoo.com"]["p50_s"] == pytest.approx(2 * 3600 - 600)


def test_slow_attempts(ch):
    rows = run(ch, "slow_attempts.sql")
    got = [(r["mx_host"], r["outcome"], int(r["attempts"]), r["p95_s"], int(r["errors"])) for r in rows]
    assert got == [
        ("mx.yahoo.com", "deferred", 1, 30.0, 0),
        ("mx.gmail.com", "delivered", 2, 3.0, 0),
        ("mx.example.org", "rejected", 1, 2.0, 1),
    ]
