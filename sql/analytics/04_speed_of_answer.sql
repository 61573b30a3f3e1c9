-- How long do answered inbound callers wait (average speed of answer, and the 90th percentile)?
SELECT
    tenant,
    count() AS answered_calls,
    round(avg(waiting_time_s), 1) AS avg_speed_of_answer_s,
    quantile(0.9)(waiting_time_s) AS p90_wait_s
FROM switchboard.calls
WHERE key_day >= toDate(now() - INTERVAL 7 DAY, 'UTC') AND started_at >= now() - INTERVAL 7 DAY
  AND direction = 'inbound' AND ifNull(talk_time_s, 0) > 0
GROUP BY tenant
ORDER BY tenant
