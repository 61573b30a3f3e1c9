-- Pipeline: which fields does NectarDesk send that we do not map (or read with another
-- type than expected), per tenant and event, most recently seen first? Fix the readers
-- in normalize/, then `transform replay` fills the history (README, "Field discovery").
SELECT
    tenant,
    event,
    kind,
    path,
    expected,
    found,
    deliveries,
    first_seen,
    last_seen,
    example
FROM switchboard.unmapped_fields
WHERE last_seen >= now() - INTERVAL 30 DAY
ORDER BY tenant, last_seen DESC, deliveries DESC
