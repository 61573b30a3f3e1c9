-- How long are conversations (talk time) and whole calls (handle time), by direction?
SELECT
    tenant,
    direction,
    count() AS connected_calls,
    round(avg(talk_time_s), 1) AS avg_talk_s,
    round(avg(duration_s), 1) AS avg_handle_s
FROM switchboard.calls
WHERE key_day >= toDate(now() - INTERVAL 7 DAY, 'UTC') AND started_at >= now() - INTERVAL 7 DAY
  AND ifNull(talk_time_s, 0) > 0
GROUP BY tenant, direction
ORDER BY tenant, direction
