"""Outbound: is mail leaving, and where and why does it stop?"""
from __future__ import annotations

from monitoring.dashboards import logql, sql
from monitoring.dashboards.common import SQL, Board, Chart, LogQL, PromQL, Row, Side, Variable
from monitoring.dashboards.settings import settings

S = settings()
N = S["top_n"]
ATTEMPTS = "mta_delivery_attempts_total"
ZONE = 'mta_zone=~"$zone"'
OUTCOMES = "('delivered', 'deferred', 'rejected')"
DELIVERIES = f"""FROM {sql.LOGS}
WHERE ServiceName = '{sql.ZONEMTA}' AND $__timeFilter(Timestamp)
  AND LogAttributes['mta.delivery.outcome'] IN {OUTCOMES}
  AND {sql.ZONE_FILTER}"""

ZONE_VARIABLE = Variable(
    "zone", "Zone", prometheus=f"label_values({ATTEMPTS}, mta_zone)",
    clickhouse=f"SELECT DISTINCT Attributes['mta.zone'] FROM {sql.table('sum')} "
               f"WHERE MetricName = 'mta.delivery.attempts' AND $__timeFilter(TimeUnix) ORDER BY 1")


def _increase(selector: str, by: str = "mta_recipient_domain") -> str:
    return f"sum by ({by}) (increase({ATTEMPTS}{{{selector}}}[$__range]))"


def _ratio(outcome: str) -> str:
    part = _increase(f'mta_delivery_outcome="{outcome}", {ZONE}')
    whole = _increase(ZONE)
    top = f"topk({N}, {whole})"
    return f"({part} or 0 * {whole}) / {whole} and on (mta_recipient_domain) {top}"


def _organize(rename: dict) -> tuple:
    return ("organize", {"excludeByName": {"Time": True}, "renameByName": rename})


BOARD = Board(
    slug="outbound", title="otel-mta / Outbound",
    description="Delivery attempts by outcome, zone, destination and sending IP; why mail is deferred or bounced.",
    variables=[ZONE_VARIABLE], loki=True,
    rows=[
        Row("Attempts", [
            Chart("Delivery attempts by outcome per zone",
                  "Delivery attempts per second, by zone and outcome (delivered, deferred, rejected). "
                  "A zone whose delivered line falls to zero while mail waits in it has stopped sending: "
                  "check the Queues dashboard and ZoneMTA's sender processes for that zone.",
                  "stacked", unit="reqps", w=24,
                  prometheus=Side([PromQL(f"sum by (mta_zone, mta_delivery_outcome) "
                                          f"(rate({ATTEMPTS}{{{ZONE}}}[$__rate_interval]))",
                                          "{{mta_zone}} {{mta_delivery_outcome}}")]),
                  clickhouse=Side([SQL(sql.counter_rate(
                      "mta.delivery.attempts", {"zone": "a['mta.zone']", "outcome": "a['mta.delivery.outcome']"},
                      where="Attributes['mta.zone'] IN (${zone:singlequote})", service=sql.ZONEMTA),
                      "time_series")])),
            Chart(f"Deferral and bounce ratio by recipient domain (top {N})",
                  f"For the {N} recipient domains with the most attempts in the range: attempts, and the "
                  "share deferred and rejected. A high deferred share at one big provider is throttling "
                  "(Gmail's 421 4.7.x, Microsoft's 451 4.7.500): slow the zone down for it and check the "
                  "top replies below; a high rejected share means bad recipients or a blocked sending IP.",
                  "table", unit="short", w=12, h=9,
                  field_units={"deferred_ratio": "percentunit", "bounce_ratio": "percentunit"},
                  prometheus=Side([PromQL(f"topk({N}, {_increase(ZONE)})", instant=True, table=True),
                                   PromQL(_ratio("deferred"), instant=True, table=True),
                                   PromQL(_ratio("rejected"), instant=True, table=True)],
                                  [("merge", {}),
                                   _organize({"mta_recipient_domain": "domain", "Value #A": "attempts",
                                              "Value #B": "deferred_ratio", "Value #C": "bounce_ratio"}),
                                   ("sortBy", {"sort": [{"field": "attempts", "desc": True}]})]),
                  clickhouse=Side([SQL(f"""SELECT LogAttributes['mta.recipient.domain'] AS domain,
       count() AS attempts,
       countIf(LogAttributes['mta.delivery.outcome'] = 'deferred') / attempts AS deferred_ratio,
       countIf(LogAttributes['mta.delivery.outcome'] = 'rejected') / attempts AS bounce_ratio
{DELIVERIES}
GROUP BY domain
ORDER BY attempts DESC, domain
LIMIT {N}""")])),
            Chart("Sending-IP health",
                  "Attempts in the range per sending IP (mta.sending_ip) and outcome. One IP with many "
                  "rejections or deferrals while the others deliver is being refused: look up the IP on "
                  "blocklists (category blacklist/policy in Bounce categories) and take it out of the "
                  "pool until it is delisted.",
                  "table", w=12, h=9,
                  prometheus=Side([PromQL(_increase(ZONE, "mta_sending_ip, mta_delivery_outcome"),
                                          instant=True, table=True)],
                                  [("groupingToMatrix", {"columnField": "mta_delivery_outcome",
                                                         "rowField": "mta_sending_ip", "valueField": "Value",
                                                         "emptyValue": "zero"})]),
                  clickhouse=Side([SQL(f"""SELECT LogAttributes['mta.sending_ip'] AS sending_ip,
       countIf(LogAttributes['mta.delivery.outcome'] = 'delivered') AS delivered,
       countIf(LogAttributes['mta.delivery.outcome'] = 'deferred') AS deferred,
       countIf(LogAttributes['mta.delivery.outcome'] = 'rejected') AS rejected
{DELIVERIES}
GROUP BY sending_ip
ORDER BY rejected + deferred DESC, sending_ip""")])),
        ]),
        Row("Why mail is not delivered", [
            Chart("Bounce categories",
                  "Deferred and rejected attempts in the range by ZoneMTA's bounce category (network, dns, "
                  "greylist, policy, blacklist, recipient, ...). Growth in blacklist or policy means a "
                  "sending IP or domain reputation problem; in network or dns a connectivity or resolver "
                  "problem on our side; recipient is usually list hygiene.",
                  "bars", w=8, h=9,
                  prometheus=Side([PromQL(_increase(f'mta_delivery_outcome=~"deferred|rejected", {ZONE}',
                                                    "mta_delivery_outcome, mta_bounce_category"),
                                          "{{mta_delivery_outcome}} {{mta_bounce_category}}", instant=True)]),
                  clickhouse=Side([SQL(f"""SELECT concat(LogAttributes['mta.delivery.outcome'], ' ',
              LogAttributes['mta.bounce.category']) AS category,
       count() AS attempts
{DELIVERIES}
  AND LogAttributes['mta.delivery.outcome'] IN ('deferred', 'rejected')
GROUP BY category
ORDER BY attempts DESC, category""")])),
            Chart("Top deferral and rejection replies",
                  f"The {N} most frequent replies of remote servers to deferred and rejected attempts in the "
                  "range, normalised (session ids, timestamps, IPs and addresses replaced) so one kind of "
                  "reply is one row. Read the enhanced status code: 4.7.x/5.7.x are policy (rate limits, "
                  "reputation, authentication: check SPF, DKIM, DMARC and volume), 5.1.x bad recipients, "
                  "4.4.x connection trouble.",
                  "table", w=16, h=9,
                  prometheus=Side([LogQL(
                      f"topk({N}, sum by (mta_delivery_outcome, reply) (count_over_time("
                      f"{logql.ZONEMTA_STREAM} | mta_delivery_outcome=~\"deferred|rejected\" "
                      f"| mta_zone=~\"$zone\" | label_format reply=`{logql.reply_kind()}` [$__range])))",
                      instant=True)],
                      [_organize({"mta_delivery_outcome": "outcome", "Value #A": "attempts"})]),
                  clickhouse=Side([SQL(f"""SELECT LogAttributes['mta.delivery.outcome'] AS outcome,
       {sql.reply_kind("LogAttributes['mta.smtp.response']")} AS reply,
       count() AS attempts,
       uniqExact(LogAttributes['mta.recipient.domain']) AS domains,
       any(LogAttributes['mta.recipient.domain']) AS example_domain
{DELIVERIES}
  AND LogAttributes['mta.delivery.outcome'] IN ('deferred', 'rejected')
GROUP BY outcome, reply
ORDER BY attempts DESC, outcome, reply
LIMIT {N}""")])),
        ]),
        Row("Delivery time", [
            Chart("Delivery duration",
                  "How long the SMTP transactions of delivery attempts took (ZoneMTA's timer), as a "
                  "heatmap over time. A band moving up means slow remote servers or a slow network path; "
                  "compare with the p95 beside it and the MX hosts in the Message explorer.",
                  "heatmap", unit="s", w=12,
                  prometheus=Side([PromQL(f"sum by (le) (increase(mta_delivery_duration_seconds_bucket"
                                          f"{{{ZONE}}}[$__rate_interval]))", "{{le}}", heatmap=True)]),
                  clickhouse=Side([SQL(f"""SELECT Timestamp AS time,
       toFloat64OrZero(LogAttributes['mta.delivery.duration_ms']) / 1000 AS duration
{DELIVERIES}
  AND LogAttributes['mta.delivery.duration_ms'] != ''
ORDER BY time""", "time_series")])),
            Chart("Delivery duration p95 per zone",
                  "The 95th percentile of the SMTP transaction time per zone. Above the line (the "
                  "DeliveryLatencyHigh alert's threshold, monitoring/config.yaml) deliveries are slow: find the "
                  "destinations in the Message explorer and check the sending host's network and DNS.",
                  "timeseries", unit="s", w=12,
                  thresholds=[(S["thresholds"]["delivery_p95_s"], "red")],
                  prometheus=Side([PromQL(f"histogram_quantile(0.95, sum by (le, mta_zone) "
                                          f"(rate(mta_delivery_duration_seconds_bucket{{{ZONE}}}[$__rate_interval])))",
                                          "{{mta_zone}}")]),
                  clickhouse=Side([SQL(f"""SELECT $__timeInterval(Timestamp) AS time,
       LogAttributes['mta.zone'] AS zone,
       quantile(0.95)(toFloat64OrZero(LogAttributes['mta.delivery.duration_ms']) / 1000) AS p95
{DELIVERIES}
  AND LogAttributes['mta.delivery.duration_ms'] != ''
GROUP BY time, zone
ORDER BY time, zone""", "time_series")])),
        ]),
    ])
