-- Which agents answer the most calls, and how long do they talk (last 7 days)?
SELECT
    tenant,
    agent_name,
    count() AS calls_answered,
    round(avg(talk_time_s), 1) AS avg_talk_s,
    sum(talk_time_s) AS total_talk_s
FROM switchboard.call_agents
ALL INNER JOIN
(
    SELECT tenant, call_id, talk_time_s FROM switchboard.calls
    WHERE key_day >= toDate(now() - INTERVAL 7 DAY, 'UTC') AND started_at >= now() - INTERVAL 7 DAY
) AS c USING (tenant, call_id)
WHERE key_day >= toDate(now() - INTERVAL 7 DAY, 'UTC') AND agent_action = 'Answered'
GROUP BY tenant, agent_name
ORDER BY tenant, calls_answered DESC
