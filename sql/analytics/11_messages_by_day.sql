-- How many text messages come in and go out each day, per channel?
SELECT
    tenant,
    toDate(sent_at + ifNull(utc_offset_s, 0)) AS local_day,
    direction,
    channel,
    count() AS messages
FROM switchboard.messages
WHERE key_day >= toDate(now() - INTERVAL 30 DAY, 'UTC') AND sent_at >= now() - INTERVAL 30 DAY
GROUP BY tenant, local_day, direction, channel
ORDER BY tenant, local_day, direction, channel
