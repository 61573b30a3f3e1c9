-- Service level: what share of inbound calls was answered within 20 seconds (last 7 days)?
SELECT
    tenant,
    count() AS inbound_calls,
    countIf(ifNull(talk_time_s, 0) > 0 AND ifNull(waiting_time_s, 0) <= 20) AS answered_within_20s,
    round(answered_within_20s / inbound_calls, 4) AS service_level
FROM switchboard.calls
WHERE key_day >= toDate(now() - INTERVAL 7 DAY, 'UTC') AND started_at >= now() - INTERVAL 7 DAY AND direction = 'inbound'
GROUP BY tenant
ORDER BY tenant
