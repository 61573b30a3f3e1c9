-- Which dispositions do agents record (last 7 days)?
SELECT
    tenant,
    disposition_code,
    count() AS calls
FROM switchboard.calls
WHERE disposition_code != '' AND started_at >= now() - INTERVAL 7 DAY
GROUP BY tenant, disposition_code
ORDER BY tenant, calls DESC
