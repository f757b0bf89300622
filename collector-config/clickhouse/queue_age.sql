-- The oldest mail still waiting: deliveries whose latest attempt was a
-- deferral, with the time since the message was queued (QUEUED record) and
-- since the last attempt, last 7 days.
WITH
    queued AS (
        SELECT LogAttributes['mta.queue_id'] AS queue_id, min(Timestamp) AS queued_at
        FROM otel.otel_logs
        WHERE ServiceName = 'zonemta'
          AND Timestamp >= now() - INTERVAL 7 DAY
          AND LogAttributes['mta.action'] = 'QUEUED'
        GROUP BY queue_id
    ),
    deliveries AS (
        SELECT
            LogAttributes['mta.queue_id']     AS queue_id,
            LogAttributes['mta.delivery.seq'] AS seq,
            any(LogAttributes['mta.recipient.domain'])               AS recipient_domain,
            argMax(LogAttributes['mta.delivery.outcome'], Timestamp) AS latest_outcome,
            argMax(LogAttributes['mta.smtp.response'], Timestamp)    AS latest_response,
            max(Timestamp)                                           AS last_attempt_at,
            count()                                                  AS attempts
        FROM otel.otel_logs
        WHERE ServiceName = 'zonemta'
          AND Timestamp >= now() - INTERVAL 7 DAY
          AND LogAttributes['mta.delivery.outcome'] IN ('delivered', 'deferred', 'rejected')
        GROUP BY queue_id, seq
    )
SELECT
    d.queue_id,
    d.seq,
    d.recipient_domain,
    d.attempts,
    dateDiff('second', q.queued_at, now64(9))       AS queue_age_s,
    dateDiff('second', d.last_attempt_at, now64(9)) AS since_last_attempt_s,
    d.latest_response
FROM deliveries AS d
INNER JOIN queued AS q ON q.queue_id = d.queue_id
WHERE d.latest_outcome = 'deferred'
ORDER BY queue_age_s DESC, d.queue_id, d.seq
LIMIT 100
