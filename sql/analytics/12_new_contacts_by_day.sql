-- How many new contacts appear each day?
SELECT
    tenant,
    toDate(ifNull(created_at, first_seen_at)) AS day,
    count() AS new_contacts
FROM switchboard.contacts
WHERE key_day >= toDate(now() - INTERVAL 31 DAY, 'UTC')
  AND ifNull(created_at, first_seen_at) >= now() - INTERVAL 30 DAY
GROUP BY tenant, day
ORDER BY tenant, day
