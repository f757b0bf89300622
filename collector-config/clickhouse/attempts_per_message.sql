-- How many attempts deliveries need: recipients (queue id + delivery seq) by
-- number of attempts and by their latest outcome, last 7 days.
WITH deliveries AS (
    SELECT
        LogAttributes['mta.queue_id']     AS queue_id,
        LogAttributes['mta.delivery.seq'] AS seq,
        count()                           AS attempts,
        argMax(LogAttributes['mta.delivery.outcome'], Timestamp) AS latest_outcome
    FROM otel.otel_logs
    WHERE ServiceName = 'zonemta'
      AND Timestamp >= now() - INTERVAL 7 DAY
      AND LogAttributes['mta.delivery.outcome'] IN ('delivered', 'deferred', 'rejected')
    GROUP BY queue_id, seq
)
SELECT
    attempts,
    latest_outcome,
    count()            AS recipients,
    uniqExact(queue_id) AS messages
FROM deliveries
GROUP BY attempts, latest_outcome
ORDER BY attempts, latest_outcome
