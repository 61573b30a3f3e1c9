-- Which dispositions do agents record (last 7 days)?
SELECT
    tenant,
    disposition_code,
    count() AS calls
FROM switchboard.calls
WHERE key_day >= toDate(now() - INTERVAL 7 DAY, 'UTC') AND started_at >= now() - INTERVAL 7 DAY
  AND disposition_code != ''
GROUP BY tenant, disposition_code
ORDER BY tenant, calls DESC
