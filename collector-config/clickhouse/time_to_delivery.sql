-- How long delivered mail waited: seconds from QUEUED to the delivered
-- attempt, by recipient domain, last 7 days.
WITH
    queued AS (
        SELECT LogAttributes['mta.queue_id'] AS queue_id, min(Timestamp) AS queued_at
        FROM otel.otel_logs
        WHERE ServiceName = 'zonemta'
          AND Timestamp >= now() - INTERVAL 7 DAY
          AND LogAttributes['mta.action'] = 'QUEUED'
        GROUP BY queue_id
    ),
    delivered AS (
        SELECT
            LogAttributes['mta.queue_id']         AS queue_id,
            LogAttributes['mta.recipient.domain'] AS recipient_domain,
            min(Timestamp)                        AS delivered_at
        FROM otel.otel_logs
        WHERE ServiceName = 'zonemta'
          AND Timestamp >= now() - INTERVAL 7 DAY
          AND LogAttributes['mta.delivery.outcome'] = 'delivered'
        GROUP BY queue_id, LogAttributes['mta.delivery.seq'], recipient_domain
    )
SELECT
    d.recipient_domain,
    count() AS deliveries,
    round(quantileExact(0.5)(dateDiff('millisecond', q.queued_at, d.delivered_at) / 1000), 3)  AS p50_s,
    round(quantileExact(0.95)(dateDiff('millisecond', q.queued_at, d.delivered_at) / 1000), 3) AS p95_s,
    round(max(dateDiff('millisecond', q.queued_at, d.delivered_at) / 1000), 3)                 AS max_s
FROM delivered AS d
INNER JOIN queued AS q ON q.queue_id = d.queue_id
GROUP BY d.recipient_domain
ORDER BY deliveries DESC, d.recipient_domain
