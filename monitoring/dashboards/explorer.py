"""Message explorer: one message's story by Message-ID, queue id or recipient
domain: its delivery events, each linked to the message's trace.

The sidecar derives a message's trace id from its Message-ID (docs/trace-ids.md),
so every event of a message carries the same trace id: in Loki as structured
metadata `trace_id`, in ClickHouse as otel_logs.TraceId.
"""
from __future__ import annotations

from monitoring.dashboards import logql, sql
from monitoring.dashboards.common import (SQL, TEMPO_DS, Board, Chart, LogQL, PromQL, Row, Side,
                                          TextVariable, TraceQL, explore_url)
from monitoring.dashboards.clickhouse import PLUGIN_ID

VARIABLES = [
    TextVariable("message_id", "Message-ID", description="The Message-ID header, with or without <>."),
    TextVariable("queue_id", "Queue id", description="ZoneMTA's queue id (as in its logs), or its start."),
    TextVariable("domain", "Recipient domain", description="A recipient domain, e.g. gmail.com, or its start."),
]

# Loki: structured metadata filters; an empty variable matches everything
LOKI_EVENTS = (f'{logql.ZONEMTA_STREAM} | mta_message_id=~"(?i)$message_id.*" '
               '| mta_queue_id=~"$queue_id.*" | mta_recipient_domain=~"(?i)$domain.*"')

CH_FILTER = """ServiceName = '{service}' AND $__timeFilter(Timestamp)
  AND (${{message_id:sqlstring}} = ''
       OR lower(LogAttributes['mta.message_id'])
          = lower(replaceRegexpAll(${{message_id:sqlstring}}, '^\\\\s*<|>\\\\s*$', '')))
  AND (${{queue_id:sqlstring}} = '' OR startsWith(LogAttributes['mta.queue_id'], ${{queue_id:sqlstring}}))
  AND (${{domain:sqlstring}} = '' OR startsWith(LogAttributes['mta.recipient.domain'], lower(${{domain:sqlstring}})))"""\
    .format(service=sql.ZONEMTA)

TRACE_SPANS = f"""SELECT TraceId AS traceID, SpanId AS spanID, ParentSpanId AS parentSpanID,
       ServiceName AS serviceName, SpanName AS operationName,
       multiply(toUnixTimestamp64Nano(Timestamp), 0.000001) AS startTime,
       multiply(Duration, 0.000001) AS duration,
       arrayMap(key -> map('key', key, 'value', SpanAttributes[key]), mapKeys(SpanAttributes)) AS tags,
       arrayMap(key -> map('key', key, 'value', ResourceAttributes[key]), mapKeys(ResourceAttributes)) AS serviceTags,
       if(StatusCode IN ('Error', 'STATUS_CODE_ERROR'), 2, 0) AS statusCode
FROM {sql.TRACES}"""

CH_TRACE_LINK = explore_url({
    "datasource": "${datasource}",
    "queries": [{"refId": "A", "datasource": {"type": PLUGIN_ID, "uid": "${datasource}"}, "editorType": "sql",
                 "format": 3, "queryType": "traces", "pluginVersion": "4.0.0",
                 "rawSql": TRACE_SPANS + "\nWHERE TraceId = '${__value.raw}'"}]})
TEMPO_TRACE_LINK = explore_url({
    "datasource": "${tempo}",
    "queries": [{"refId": "A", "datasource": TEMPO_DS.to_json(), "queryType": "traceql",
                 "query": "${__value.raw}"}]})

BOARD = Board(
    slug="explorer", title="otel-mta / Message explorer",
    description="Find a message by Message-ID, queue id or recipient domain: its delivery events and its trace.",
    variables=VARIABLES, loki=True, tempo=True, time_from="now-24h",
    rows=[
        Row("Events", [
            Chart("Delivery events",
                  "Every event of the matching messages, newest first: queued, each delivery attempt with "
                  "its outcome, MX, sending IP and the remote server's reply. Click a trace id to open "
                  "the message's trace. No rows: widen the time range, or check the id (ZoneMTA's logs "
                  "name the queue id; the Message-ID is the header's, without <>).",
                  "table", w=24, h=12,
                  prometheus=Side([LogQL(LOKI_EVENTS)],
                                  [("extractFields", {"source": "labels", "replace": False, "format": "auto"}),
                                   ("organize", {"includeByName": {
                                       "Time": True, "mta_action": True, "mta_queue_id": True,
                                       "mta_delivery_seq": True, "mta_message_id": True, "mta_zone": True,
                                       "mta_recipient_domain": True, "mta_delivery_outcome": True,
                                       "mta_sending_ip": True, "mta_mx_host": True, "mta_smtp_response": True,
                                       "trace_id": True}})],
                                  links={"trace_id": ("Open the message's trace", TEMPO_TRACE_LINK)}),
                  clickhouse=Side([SQL(f"""SELECT Timestamp AS time,
       LogAttributes['mta.action'] AS action,
       LogAttributes['mta.queue_id'] AS queue_id,
       LogAttributes['mta.delivery.seq'] AS seq,
       LogAttributes['mta.message_id'] AS message_id,
       LogAttributes['mta.zone'] AS zone,
       LogAttributes['mta.recipient.domain'] AS domain,
       LogAttributes['mta.delivery.outcome'] AS outcome,
       LogAttributes['mta.sending_ip'] AS sending_ip,
       LogAttributes['mta.mx.host'] AS mx,
       LogAttributes['mta.smtp.response'] AS response,
       TraceId AS trace_id
FROM {sql.LOGS}
WHERE {CH_FILTER}
ORDER BY Timestamp DESC
LIMIT 500""")], links={"trace_id": ("Open the message's trace", CH_TRACE_LINK)})),
        ]),
        Row("Traces and the destination", [
            Chart("Traces of the matching messages",
                  "The traces of the messages the filters match: one per message, a message span from "
                  "queued to the last outcome with a delivery span per attempt. Open one to see where "
                  "the time went (connect, TLS, SMTP); none found while events exist means tail sampling "
                  "dropped a plain success (docs/clickhouse.md).",
                  "table", w=12, h=10,
                  prometheus=Side([TraceQL('{ span.mta.message_id =~ "(?i)$message_id.*" '
                                           '&& span.mta.queue_id =~ "$queue_id.*" '
                                           '&& span.mta.recipient.domain =~ "(?i)$domain.*" }')]),
                  clickhouse=Side([SQL(f"""WITH matching AS (
    SELECT DISTINCT TraceId FROM {sql.LOGS}
    WHERE {CH_FILTER} AND TraceId != ''
    LIMIT 100
)
SELECT TraceId AS trace_id,
       min(Timestamp) AS started,
       max(Timestamp + toIntervalNanosecond(Duration)) - min(Timestamp) AS took,
       anyIf(SpanAttributes['mta.message.state'], SpanName = 'message') AS state,
       countIf(SpanKind = 'Client') AS attempts,
       countIf(StatusCode = 'Error') AS errors
FROM {sql.TRACES}
WHERE TraceId IN (SELECT TraceId FROM matching) AND $__timeFilter(Timestamp)
GROUP BY TraceId
ORDER BY started DESC""")], links={"trace_id": ("Open the trace", CH_TRACE_LINK)})),
            Chart("Outcomes for the recipient domain",
                  "Delivery attempts per second to the chosen recipient domain (all domains when empty), "
                  "by outcome. Deferrals that rise while deliveries fall are throttling by that provider: "
                  "compare with its replies in the events above.",
                  "stacked", unit="reqps", w=12, h=10,
                  prometheus=Side([PromQL('sum by (mta_delivery_outcome) (rate(mta_delivery_attempts_total'
                                          '{mta_recipient_domain=~"(?i)$domain.*"}[$__rate_interval]))',
                                          "{{mta_delivery_outcome}}")]),
                  clickhouse=Side([SQL(f"""SELECT $__timeInterval(Timestamp) AS time,
       LogAttributes['mta.delivery.outcome'] AS outcome,
       count() / $__interval_s AS attempts
FROM {sql.LOGS}
WHERE {CH_FILTER} AND LogAttributes['mta.delivery.outcome'] IN ('delivered', 'deferred', 'rejected')
GROUP BY time, outcome
ORDER BY time, outcome""", "time_series")])),
        ]),
    ])

