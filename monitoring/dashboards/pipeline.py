"""Telemetry pipeline: is the sidecar receiving, refusing, dropping, exporting?"""
from __future__ import annotations

from monitoring.dashboards import sql
from monitoring.dashboards.common import SQL, Board, Chart, PromQL, Row, Side

INSTANCE_SQL = "r['service.instance.id']"
SELF = sql.SIDECAR


def _rate(metric: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}[$__rate_interval]))"


def _ch_rate(metric: str, by: dict) -> SQL:
    return SQL(sql.counter_rate(metric, {"instance": INSTANCE_SQL, **by}, service=SELF), "time_series")


PLUGIN_BY = "instance, plugin_instance, plugin_context"
PLUGIN_SQL = {"plugin": "concat(a['plugin.instance'], ' ', a['plugin.context'])"}

BOARD = Board(
    slug="pipeline", title="otel-mta / Telemetry pipeline",
    description="The sidecar's own health: records received, refused and dropped, exports, queue and spool, "
                "pollers and the ZoneMTA plugin.",
    rows=[
        Row("Receiving", [
            Chart("Records received per receiver",
                  "Records (datagrams, GELF messages, plugin events) each receiver accepted per second, per "
                  "sidecar. A receiver that falls to zero while ZoneMTA sends mail has lost its producer: "
                  "check ZoneMTA's log.remote / log.gelf settings or the plugin's url.",
                  "stacked", unit="cps", w=8,
                  prometheus=Side([PromQL(_rate("otelmta_receiver_accepted_records_total",
                                                "instance, receiver, transport"),
                                          "{{instance}} {{receiver}}/{{transport}}")]),
                  clickhouse=Side([_ch_rate("otelmta_receiver_accepted_records",
                                            {"receiver": "a['receiver']", "transport": "a['transport']"})])),
            Chart("Records refused by reason",
                  "Records a receiver rejected as malformed, oversized, truncated or unauthorised, per "
                  "second. A steady rate means a misconfigured producer (a wrong port, an old encoder, a "
                  "missing API key): the reason names it; a burst is usually a scan or garbage.",
                  "timeseries", unit="cps", w=8,
                  prometheus=Side([PromQL(_rate("otelmta_receiver_refused_records_total",
                                                "instance, receiver, reason"),
                                          "{{instance}} {{receiver}} {{reason}}")]),
                  clickhouse=Side([_ch_rate("otelmta_receiver_refused_records",
                                            {"receiver": "a['receiver']", "reason": "a['reason']"})])),
            Chart("Records dropped by reason",
                  "Records lost before decoding (kernel_overflow: the socket buffer was full; queue_full: "
                  "the reading thread's queue was; chunk_timeout: a GELF message's chunks never all came). "
                  "Losses mean the sidecar cannot keep up: give it CPU or a larger receive_buffer/"
                  "queue_size. Duplicates (the same event from the plugin and the remote log) are no loss "
                  "and are counted apart (otelmta_receiver_deduplicated_records).",
                  "timeseries", unit="cps", w=8,
                  prometheus=Side([PromQL(_rate("otelmta_receiver_dropped_records_total",
                                                "instance, receiver, reason"),
                                          "{{instance}} {{receiver}} {{reason}}")]),
                  clickhouse=Side([_ch_rate("otelmta_receiver_dropped_records",
                                            {"receiver": "a['receiver']", "reason": "a['reason']"})])),
        ]),
        Row("Exporting", [
            Chart("Exported per second",
                  "Log records, spans and metric data points the exporter delivered to the Collector, "
                  "per second. Log records should follow the received rate; a flat zero with records "
                  "coming in means the Collector is unreachable (see the queue and retries).",
                  "timeseries", unit="cps", w=8,
                  prometheus=Side([PromQL(_rate("otelmta_exporter_sent_log_records_total", "instance"),
                                          "{{instance}} log records"),
                                   PromQL(_rate("otelmta_exporter_sent_spans_total", "instance"),
                                          "{{instance}} spans"),
                                   PromQL(_rate("otelmta_exporter_sent_metric_points_total", "instance"),
                                          "{{instance}} metric points")]),
                  clickhouse=Side([_ch_rate("otelmta_exporter_sent_log_records", {"signal": "'log records'"}),
                                   _ch_rate("otelmta_exporter_sent_spans", {"signal": "'spans'"}),
                                   _ch_rate("otelmta_exporter_sent_metric_points", {"signal": "'metric points'"})])),
            Chart("Export failures",
                  "Records, spans and points lost after the exporter gave up (a non-retryable error, or "
                  "queue and spool full), by reason. Any value here is data lost: fix the Collector "
                  "endpoint or its limits, and turn the spool on (OTEL_MTA_SPOOL) to ride out outages.",
                  "timeseries", unit="cps", w=8,
                  prometheus=Side([PromQL(_rate("otelmta_exporter_send_failed_log_records_total", "instance, reason"),
                                          "{{instance}} log records {{reason}}"),
                                   PromQL(_rate("otelmta_exporter_send_failed_spans_total", "instance, reason"),
                                          "{{instance}} spans {{reason}}"),
                                   PromQL(_rate("otelmta_exporter_send_failed_metric_points_total", "instance, reason"),
                                          "{{instance}} metric points {{reason}}")]),
                  clickhouse=Side([_ch_rate("otelmta_exporter_send_failed_log_records", {"reason": "a['reason']"}),
                                   _ch_rate("otelmta_exporter_send_failed_spans", {"reason": "a['reason']"}),
                                   _ch_rate("otelmta_exporter_send_failed_metric_points", {"reason": "a['reason']"})])),
            Chart("Export retries",
                  "Export requests sent again after a retryable failure (the Collector busy, refusing or "
                  "unreachable), per second. Occasional retries are normal; a steady rate means the "
                  "Collector is overloaded or flapping: check its memory_limiter and replicas.",
                  "timeseries", unit="reqps", w=8,
                  prometheus=Side([PromQL(_rate("otelmta_exporter_retries_total", "instance, exporter"),
                                          "{{instance}} {{exporter}}")]),
                  clickhouse=Side([_ch_rate("otelmta_exporter_retries", {"exporter": "a['exporter']"})])),
            Chart("Export queue use",
                  "Bytes waiting in the in-memory export queue against its limit. Filling up means the "
                  "Collector is slower than the traffic or down; when it is full, new data goes to the "
                  "spool (if on) or is refused and counted as export failures.",
                  "timeseries", unit="percentunit", w=12, max=1, thresholds=[(0.8, "red")],
                  prometheus=Side([PromQL("max by (instance, exporter) (otelmta_exporter_queue_size_bytes) / "
                                          "max by (instance, exporter) (otelmta_exporter_queue_capacity_bytes)",
                                          "{{instance}} {{exporter}}")]),
                  clickhouse=Side([SQL(sql.level_series(
                      ("otelmta_exporter_queue_size", "otelmta_exporter_queue_capacity"),
                      {"instance": INSTANCE_SQL, "exporter": "a['exporter']"}, service=SELF,
                      value="maxIf(v, m = 'otelmta_exporter_queue_size') "
                            "/ maxIf(v, m = 'otelmta_exporter_queue_capacity')"), "time_series")])),
            Chart("Spool on disk",
                  "Bytes of export requests spooled on disk while the Collector was unreachable (only with "
                  "the spool on). It should drain to zero once the Collector is back; if it stays, the "
                  "Collector accepts less than the sidecar produces.",
                  "timeseries", unit="bytes", w=12,
                  prometheus=Side([PromQL("max by (instance, exporter) (otelmta_exporter_spool_size_bytes)",
                                          "{{instance}} {{exporter}}")]),
                  clickhouse=Side([SQL(sql.level_series(
                      "otelmta_exporter_spool_size", {"instance": INSTANCE_SQL, "exporter": "a['exporter']"},
                      service=SELF, agg="max"), "time_series")])),
        ]),
        Row("Pollers and the ZoneMTA plugin", [
            Chart("Pollers up",
                  "1 while a poller's last poll of its target succeeded, 0 when it failed (ZoneMTA API, "
                  "MongoDB, Redis, host). At 0 the target is down or the poller's URL or credentials are "
                  "wrong: `otel-mta check` prints the reason; the failures panel shows it over time.",
                  "timeseries", w=8, max=1,
                  prometheus=Side([PromQL("min by (instance, poller, target) (otelmta_poller_up_ratio)",
                                          "{{instance}} {{poller}} {{target}}")]),
                  clickhouse=Side([SQL(sql.level_series(
                      "otelmta_poller_up", {"instance": INSTANCE_SQL, "poller": "a['poller']",
                                            "target": "a['target']"}, service=SELF, agg="min"),
                      "time_series")])),
            Chart("Poller failures by reason",
                  "Failed polls per second by poller and reason (refused, timeout, auth, http_<status>, "
                  "overrun, ...). auth: fix the credentials in the URL; overrun: the poll takes longer "
                  "than its interval, so lengthen the interval or the timeout.",
                  "timeseries", unit="cps", w=8,
                  prometheus=Side([PromQL(_rate("otelmta_poller_failures_total", "instance, poller, reason"),
                                          "{{instance}} {{poller}} {{reason}}")]),
                  clickhouse=Side([_ch_rate("otelmta_poller_failures", {"poller": "a['poller']",
                                                                       "reason": "a['reason']"})])),
            Chart("Sidecar CPU and memory",
                  "CPU (1 = one core) and resident memory of each sidecar. CPU near one core means it "
                  "is at its limit and will drop datagrams (see Records dropped); memory that keeps "
                  "growing past ~100 MiB is a bug worth reporting.",
                  "timeseries", unit="percentunit", w=8,
                  prometheus=Side([PromQL(_rate("otelmta_process_cpu_time_seconds_total", "instance"),
                                          "{{instance}} CPU"),
                                   PromQL("max by (instance) (otelmta_process_memory_rss_bytes) / 2^30",
                                          "{{instance}} RSS GiB")]),
                  clickhouse=Side([_ch_rate("otelmta_process_cpu_time", {"what": "'CPU'"}),
                                   SQL(sql.level_series("otelmta_process_memory_rss", {"instance": INSTANCE_SQL},
                                                        service=SELF, value="max(v) / pow(2, 30)"),
                                       "time_series")])),
            Chart("ZoneMTA plugin events sent",
                  "Events each ZoneMTA process's plugin delivered to the sidecar per second, and events "
                  "waiting in its buffer. A process whose line stops has lost the sidecar (wrong url or "
                  "key) or died; a buffer that grows is a slow or refusing sidecar.",
                  "timeseries", unit="cps", w=8,
                  prometheus=Side([PromQL(_rate("otelmta_plugin_sent_total", PLUGIN_BY),
                                          "{{plugin_instance}} {{plugin_context}} sent"),
                                   PromQL(f"max by ({PLUGIN_BY}) (otelmta_plugin_buffered)",
                                          "{{plugin_instance}} {{plugin_context}} buffered")]),
                  clickhouse=Side([_ch_rate("otelmta_plugin_sent", PLUGIN_SQL)])),
            Chart("ZoneMTA plugin problems",
                  "Per second: events the plugin dropped (buffer full), gave up on (failed), sent again "
                  "(retries), attempts it forgot (evicted) and exceptions caught in its hooks. Drops and "
                  "failures are lost telemetry: check the sidecar's events endpoint (its requests by "
                  "status beside) and the plugin's bufferSize; hook errors: report them with ZoneMTA's log.",
                  "timeseries", unit="cps", w=8,
                  prometheus=Side([PromQL(_rate(f"otelmta_plugin_{what}_total", PLUGIN_BY),
                                          "{{plugin_instance}} {{plugin_context}} " + what.replace("_", " "))
                                   for what in ("dropped", "failed", "retries", "evicted", "hook_errors")]),
                  clickhouse=Side([_ch_rate(f"otelmta_plugin_{what}", {**PLUGIN_SQL, "what": f"'{what}'"})
                                   for what in ("dropped", "failed", "retries", "evicted", "hook_errors")])),
            Chart("Events endpoint requests by status",
                  "Requests to the sidecar's events endpoint by HTTP status: 200 accepted, 4xx refused "
                  "(401: wrong API key, 413: batch too large), 503 pushed back because the export queue "
                  "is full. Anything but 200 for long means plugin events are delayed or lost.",
                  "timeseries", unit="reqps", w=8,
                  prometheus=Side([PromQL(_rate("otelmta_events_requests_total", "instance, http_response_status_code"),
                                          "{{instance}} {{http_response_status_code}}")]),
                  clickhouse=Side([_ch_rate("otelmta_events_requests",
                                            {"status": "a['http.response.status_code']"})])),
        ]),
    ])
