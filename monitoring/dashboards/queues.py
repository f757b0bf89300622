"""Queues: how much waits, for how long, where to, and what the destinations answer."""
from __future__ import annotations

from monitoring.dashboards import sql
from monitoring.dashboards.common import SQL, Board, Chart, PromQL, Row, Side, Variable
from monitoring.dashboards.settings import settings

S = settings()
N = S["top_n"]
T = S["thresholds"]
ZONE = 'mta_zone=~"$zone"'
ZONE_ATTR = "Attributes['mta.zone'] IN (${zone:singlequote})"

ZONE_VARIABLE = Variable(
    "zone", "Zone", prometheus="label_values(mta_queue_size, mta_zone)",
    clickhouse=f"SELECT DISTINCT Attributes['mta.zone'] FROM {sql.table('gauge')} "
               f"WHERE MetricName = 'mta.queue.size' AND $__timeFilter(TimeUnix) ORDER BY 1")

FINAL = "mta_delivery_outcome=~\"delivered|rejected\""


def _organize(rename: dict) -> tuple:
    return ("organize", {"excludeByName": {"Time": True}, "renameByName": rename})


BOARD = Board(
    slug="queues", title="otel-mta / Queues",
    description="ZoneMTA's queue: size and age per zone, growth, the destinations it waits for and what they answer.",
    variables=[ZONE_VARIABLE],
    rows=[
        Row("Size and age", [
            Chart("Queue size by zone and state",
                  "Deliveries (one per recipient) in ZoneMTA's queue, per zone: active are due now, "
                  "deferred wait for a retry. Active that keeps growing means the zone's senders cannot "
                  "keep up or stopped (restart the zone's sender processes, check its connection limits); "
                  "deferred that keeps growing means destinations refuse mail (see the table below).",
                  "stacked", w=12,
                  prometheus=Side([PromQL(f"sum by (mta_zone, mta_queue_state) (mta_queue_size{{{ZONE}}})",
                                          "{{mta_zone}} {{mta_queue_state}}")]),
                  clickhouse=Side([SQL(sql.level_series(
                      "mta.queue.size", {"zone": "a['mta.zone']", "state": "a['mta.queue.state']"},
                      where=ZONE_ATTR, service=sql.ZONEMTA), "time_series")])),
            Chart("Oldest queued and oldest deferred age per zone",
                  "Per zone: active, how long the longest-waiting due delivery has been due (how far "
                  "behind the senders are); deferred, how long the oldest deferred delivery has been in "
                  f"the queue (how close it is to bouncing). Lines: {T['queue_active_behind_s']} s for "
                  f"active, {T['queue_deferred_age_s']} s for deferred (the QueueStuck and DeferredMailTooOld alerts' thresholds, monitoring/config.yaml). Active "
                  "over its line: the zone is stuck, restart its senders; deferred over its line: look up "
                  "the destination's last error and decide to wait, reroute or bounce.",
                  "timeseries", unit="s", w=12,
                  thresholds=[(T["queue_active_behind_s"], "orange"), (T["queue_deferred_age_s"], "red")],
                  prometheus=Side([PromQL(f"max by (mta_zone, mta_queue_state) "
                                          f"(mta_queue_oldest_age_seconds{{{ZONE}}})",
                                          "{{mta_zone}} {{mta_queue_state}}")]),
                  clickhouse=Side([SQL(sql.level_series(
                      "mta.queue.oldest_age", {"zone": "a['mta.zone']", "state": "a['mta.queue.state']"},
                      where=ZONE_ATTR, agg="max", service=sql.ZONEMTA), "time_series")])),
            Chart("Net queue growth",
                  "Deliveries queued per second (QUEUED, one per recipient, all zones: QUEUED names no "
                  "zone) against final outcomes (delivered or rejected attempts, drops and deletions), and "
                  "their difference. A net above zero for long means the queue grows faster than it "
                  "drains: check deferrals and the zones' sending rate before the queue's age alerts fire.",
                  "timeseries", unit="cps", w=24,
                  prometheus=Side([
                      PromQL("sum(rate(mta_delivery_queued_total[$__rate_interval]))", "queued"),
                      PromQL(f"sum(rate(mta_delivery_attempts_total{{{FINAL}}}[$__rate_interval])) "
                             "+ (sum(rate(mta_delivery_dropped_total[$__rate_interval])) or vector(0)) "
                             "+ (sum(rate(mta_delivery_deleted_total[$__rate_interval])) or vector(0))",
                             "final outcomes"),
                      PromQL("sum(rate(mta_delivery_queued_total[$__rate_interval])) "
                             f"- sum(rate(mta_delivery_attempts_total{{{FINAL}}}[$__rate_interval])) "
                             "- (sum(rate(mta_delivery_dropped_total[$__rate_interval])) or vector(0)) "
                             "- (sum(rate(mta_delivery_deleted_total[$__rate_interval])) or vector(0))",
                             "net growth")]),
                  clickhouse=Side([SQL(f"""SELECT $__timeInterval(Timestamp) AS time,
       sumIf(toUInt64OrZero(LogAttributes['mta.recipient.count']), LogAttributes['mta.action'] = 'QUEUED')
           / $__interval_s AS queued,
       countIf(LogAttributes['mta.delivery.outcome'] IN ('delivered', 'rejected')
               OR LogAttributes['mta.action'] IN ('DROP', 'DELETED')) / $__interval_s AS final_outcomes,
       queued - final_outcomes AS net_growth
FROM {sql.LOGS}
WHERE ServiceName = '{sql.ZONEMTA}' AND $__timeFilter(Timestamp)
GROUP BY time
ORDER BY time""", "time_series")])),
        ]),
        Row("Destinations", [
            Chart(f"Top destination domains in the queue (top {N})",
                  f"The {N} destination domains with the most deliveries in the queue, per zone and state "
                  "(from ZoneMTA's queue collection in MongoDB; the rest of each zone is `other`). One "
                  "domain holding most of the deferred queue is throttling or refusing us: see its last "
                  "error beside, and consider a slower zone for it.",
                  "table", w=10, h=10,
                  prometheus=Side([PromQL(f"topk({N}, sum by (mta_zone, mta_queue_state, mta_recipient_domain) "
                                          f"(mta_queue_domain_size{{{ZONE}}}))", instant=True, table=True)],
                                  [_organize({"mta_zone": "zone", "mta_queue_state": "state",
                                              "mta_recipient_domain": "domain", "Value": "deliveries"}),
                                   ("sortBy", {"sort": [{"field": "deliveries", "desc": True}]})]),
                  clickhouse=Side([SQL(sql.level_now(
                      "mta.queue.domain.size", {"zone": "a['mta.zone']", "state": "a['mta.queue.state']",
                                                "domain": "a['mta.recipient.domain']"},
                      where=ZONE_ATTR, service=sql.ZONEMTA, limit=N, order="deliveries DESC", name="deliveries"))])),
            Chart("Last SMTP error per destination",
                  "For each top deferred destination: the newest reply it gave (normalised: ids, "
                  "timestamps and IPs replaced, addresses masked) and how long ago. The reply says what "
                  "to do: 421/451 4.7.x is a rate limit or reputation block (slow down, check the sending "
                  "IP's reputation), 4.2.x a full or busy mailbox, 4.4.x a network problem, DNS errors a "
                  "resolver or MX problem.",
                  "table", w=14, h=10,
                  prometheus=Side([PromQL("max by (mta_zone, mta_recipient_domain, mta_smtp_response) "
                                          f"(mta_queue_domain_last_error_age_seconds{{{ZONE}}})",
                                          instant=True, table=True)],
                                  [_organize({"mta_zone": "zone", "mta_recipient_domain": "domain",
                                              "mta_smtp_response": "last reply", "Value": "age"})]),
                  clickhouse=Side([SQL(sql.level_now(
                      "mta.queue.domain.last_error_age",
                      {"zone": "a['mta.zone']", "domain": "a['mta.recipient.domain']",
                       "last_reply": "a['mta.smtp.response']"},
                      where=ZONE_ATTR, agg="min", service=sql.ZONEMTA, order="age ASC", name="age"))]),
                  field_units={"age": "s"}),
            Chart("Deferred deliveries per destination",
                  "Deferred deliveries in the queue over time for the top destinations. A domain that "
                  "climbs steadily is refusing more than it accepts; one that drops at once was bounced "
                  "or delivered in a burst after its block lifted.",
                  "stacked", w=24,
                  prometheus=Side([PromQL('sum by (mta_recipient_domain) (mta_queue_domain_size'
                                          f'{{mta_queue_state="deferred", {ZONE}}})', "{{mta_recipient_domain}}")]),
                  clickhouse=Side([SQL(sql.level_series(
                      "mta.queue.domain.size", {"domain": "a['mta.recipient.domain']"},
                      where=f"Attributes['mta.queue.state'] = 'deferred' AND {ZONE_ATTR}",
                      service=sql.ZONEMTA), "time_series")])),
        ]),
    ])
