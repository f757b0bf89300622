-- Delivery outcomes by recipient domain and sending IP, last 24 hours.
-- Source: delivery log records (one per attempt; logs are never tail-sampled).
SELECT
    LogAttributes['mta.recipient.domain'] AS recipient_domain,
    LogAttributes['mta.sending_ip']       AS sending_ip,
    count()                                                        AS attempts,
    countIf(LogAttributes['mta.delivery.outcome'] = 'delivered')   AS delivered,
    countIf(LogAttributes['mta.delivery.outcome'] = 'deferred')    AS deferred,
    countIf(LogAttributes['mta.delivery.outcome'] = 'rejected')    AS rejected,
    round(delivered / attempts, 4)                                 AS delivered_ratio
FROM otel.otel_logs
WHERE ServiceName = 'zonemta'
  AND Timestamp >= now() - INTERVAL 24 HOUR
  AND LogAttributes['mta.delivery.outcome'] IN ('delivered', 'deferred', 'rejected')
GROUP BY recipient_domain, sending_ip
ORDER BY attempts DESC, recipient_domain, sending_ip
LIMIT 100
