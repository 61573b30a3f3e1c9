-- Pipeline: which events arrived in the last 24 hours, and what became of them?
SELECT
    tenant,
    event,
    status,
    count() AS events
FROM switchboard.raw_events
WHERE received_at >= now() - INTERVAL 1 DAY
GROUP BY tenant, event, status
ORDER BY tenant, events DESC
