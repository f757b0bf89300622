-- Why mail is deferred: deferrals by bounce category, enhanced status code and
-- recipient domain, last 24 hours, with one example SMTP reply each.
SELECT
    LogAttributes['mta.bounce.category']      AS category,
    LogAttributes['mta.smtp.enhanced_status'] AS enhanced_status,
    LogAttributes['mta.recipient.domain']     AS recipient_domain,
    count()                                   AS deferrals,
    uniqExact(LogAttributes['mta.queue_id'], LogAttributes['mta.delivery.seq']) AS recipients,
    any(LogAttributes['mta.smtp.response'])   AS example_response
FROM otel.otel_logs
WHERE ServiceName = 'zonemta'
  AND Timestamp >= now() - INTERVAL 24 HOUR
  AND LogAttributes['mta.delivery.outcome'] = 'deferred'
GROUP BY category, enhanced_status, recipient_domain
ORDER BY deferrals DESC, category, enhanced_status, recipient_domain
LIMIT 50
