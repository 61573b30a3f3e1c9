-- What share of inbound calls do callers abandon before an agent answers (last 7 days)?
SELECT
    tenant,
    count() AS inbound_calls,
    countIf(ifNull(abandoned, 0) = 1) AS abandoned_calls,
    round(abandoned_calls / inbound_calls, 4) AS abandonment_rate
FROM switchboard.calls
WHERE key_day >= toDate(now() - INTERVAL 7 DAY, 'UTC') AND started_at >= now() - INTERVAL 7 DAY AND direction = 'inbound'
GROUP BY tenant
ORDER BY tenant
