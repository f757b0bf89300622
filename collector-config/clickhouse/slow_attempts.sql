-- Slow MX hosts: duration of delivery-attempt spans by MX host and outcome,
-- last 24 hours. With tail sampling on, plain successes are a sample: compare
-- durations, not counts.
SELECT
    SpanAttributes['server.address']       AS mx_host,
    SpanAttributes['mta.delivery.outcome'] AS outcome,
    count()                                AS attempts,
    round(quantileExact(0.5)(Duration) / 1e9, 3)  AS p50_s,
    round(quantileExact(0.95)(Duration) / 1e9, 3) AS p95_s,
    countIf(StatusCode = 'Error')          AS errors
FROM otel.otel_traces
WHERE ServiceName = 'zonemta'
  AND SpanKind = 'Client'
  AND Timestamp >= now() - INTERVAL 24 HOUR
  AND SpanAttributes['mta.delivery.outcome'] != ''
GROUP BY mx_host, outcome
ORDER BY p95_s DESC, mx_host, outcome
LIMIT 50
