"""What the dashboards and rules stand on: the pipeline's output in a real
Prometheus, under the names the Collector's remote-write translation gives."""
from __future__ import annotations

# one name per source the dashboards read, as Prometheus stores it
EXPECTED = {
    "mta_delivery_attempts_total": "remote log / plugin events",
    "mta_delivery_duration_seconds_bucket": "remote log (histogram)",
    "mta_message_queued_total": "remote log QUEUED",
    "mta_queue_size": "ZoneMTA API poller",
    "mta_queue_oldest_age_seconds": "MongoDB poller (ZoneMTA's queue)",
    "zonemta_delivery_status_total": "ZoneMTA /metrics",
    "redis_memory_used_bytes": "Redis poller",
    "mongodb_replset_member_replication_lag_seconds": "MongoDB poller on the replica-set member",
    "system_cpu_time_seconds_total": "host poller",
    "process_cpu_time_seconds_total": "host poller, processes",
    "otelmta_receiver_accepted_records_total": "the sidecar's self-telemetry",
    "otelmta_plugin_sent_total": "the plugin's health events",
    "target_info": "resource attributes",
}


def test_every_source_reaches_prometheus(pipeline_run):
    names = pipeline_run.prometheus.series_names()
    missing = {n: why for n, why in EXPECTED.items() if n not in names}
    assert not missing, f"not in Prometheus: {missing}; it has: {sorted(names)}"


def test_delivery_outcomes_per_zone_and_both_sidecars(pipeline_run):
    rows = pipeline_run.query("sum by (mta_zone, mta_delivery_outcome) (mta_delivery_attempts_total)")
    seen = {(r["metric"].get("mta_zone"), r["metric"].get("mta_delivery_outcome")) for r in rows}
    assert {("default", "delivered"), ("default", "deferred"), ("default", "rejected"),
            ("bulk", "delivered"), ("transactional", "delivered")} <= seen, seen
    instances = {r["metric"]["instance"] for r in pipeline_run.query("count by (instance) (target_info)")}
    assert {"mail-0", "rs-0"} <= instances, instances


def test_rates_have_samples_across_the_run(pipeline_run):
    rate = pipeline_run.query("sum(rate(mta_delivery_attempts_total[5m]))")
    assert rate and float(rate[0]["value"][1]) > 0


def test_the_real_zonemta_left_deferred_mail_queued(pipeline_run):
    rows = pipeline_run.query('sum by (mta_zone) (mta_queue_size{mta_queue_state="deferred"})')
    assert any(float(r["value"][1]) >= 1 for r in rows), rows
    assert pipeline_run.queue_ids, "queue ids of the real ZoneMTA's messages"


def test_the_same_run_as_otlp_json_for_chdb(pipeline_run):
    assert all(pipeline_run.otlp[s] for s in ("logs", "traces", "metrics"))
