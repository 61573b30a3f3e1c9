-- Pipeline: what could not be processed, and why (last 7 days)?
SELECT
    stage,
    reason,
    count() AS records,
    max(failed_at) AS last_seen
FROM switchboard.dead_letters
WHERE failed_at >= now() - INTERVAL 7 DAY
GROUP BY stage, reason
ORDER BY records DESC
