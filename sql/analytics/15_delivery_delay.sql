-- Pipeline: how long from receipt to being queryable (seconds), last 24 hours?
SELECT
    count() AS events,
    quantile(0.5)(loaded_at - received_at) AS p50_delay_s,
    quantile(0.99)(loaded_at - received_at) AS p99_delay_s,
    max(loaded_at - received_at) AS max_delay_s
FROM switchboard.raw_events
WHERE received_at >= now() - INTERVAL 1 DAY
