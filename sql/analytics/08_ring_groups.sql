-- How does each ring group do: calls offered, abandonment, speed of answer (last 7 days)?
SELECT
    tenant,
    ring_group,
    count() AS offered,
    countIf(ifNull(talk_time_s, 0) > 0) AS answered,
    round(countIf(ifNull(abandoned, 0) = 1) / offered, 4) AS abandonment_rate,
    round(avgIf(waiting_time_s, ifNull(talk_time_s, 0) > 0), 1) AS avg_speed_of_answer_s
FROM switchboard.calls
WHERE key_day >= toDate(now() - INTERVAL 7 DAY, 'UTC') AND started_at >= now() - INTERVAL 7 DAY
  AND direction = 'inbound' AND ring_group != ''
GROUP BY tenant, ring_group
ORDER BY tenant, offered DESC
