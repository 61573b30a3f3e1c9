-- How do outbound campaigns do: calls made, share connected, talk time (last 7 days)?
SELECT
    tenant,
    campaign,
    count() AS calls,
    round(countIf(ifNull(talk_time_s, 0) > 0) / calls, 4) AS connect_rate,
    round(avgIf(talk_time_s, ifNull(talk_time_s, 0) > 0), 1) AS avg_talk_s
FROM switchboard.calls
WHERE key_day >= toDate(now() - INTERVAL 7 DAY, 'UTC') AND started_at >= now() - INTERVAL 7 DAY
  AND direction = 'outbound' AND campaign != ''
GROUP BY tenant, campaign
ORDER BY tenant, calls DESC
