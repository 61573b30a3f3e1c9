-- What share of inbound calls do callers abandon before an agent answers (last 7 days)?
SELECT
    tenant,
    count() AS inbound_calls,
    countIf(ifNull(abandoned, 0) = 1) AS abandoned_calls,
    round(abandoned_calls / inbound_calls, 4) AS abandonment_rate
FROM switchboard.calls
WHERE direction = 'inbound' AND started_at >= now() - INTERVAL 7 DAY
GROUP BY tenant
ORDER BY tenant
