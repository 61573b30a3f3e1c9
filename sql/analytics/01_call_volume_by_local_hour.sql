-- How many calls come in and go out at each hour of the center's own day (last 7 days)?
-- started_at is UTC; adding utc_offset_s gives the sender's local clock.
SELECT
    tenant,
    toHour(started_at + ifNull(utc_offset_s, 0)) AS local_hour,
    direction,
    count() AS calls
FROM switchboard.calls
WHERE key_day >= toDate(now() - INTERVAL 7 DAY, 'UTC') AND started_at >= now() - INTERVAL 7 DAY
GROUP BY tenant, local_hour, direction
ORDER BY tenant, local_hour, direction
