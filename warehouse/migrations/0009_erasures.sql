-- 0009: the audit of erasures (README, "Erasure"). `loader erase` adds one row per
-- request once it is done: who asked and when, what it was about (the contact ids and
-- phone digits, after each was widened by the other: a contact's numbers, a number's
-- contacts; and the person's calls), and how many rows of each table it redacted.
--
-- The identifiers stay here and in the compacted Kafka topic `webhooks.erasures` on
-- purpose: they are what keeps the person out of every later delivery and replay.

CREATE TABLE IF NOT EXISTS {db}.erasures
(
    request_id String,
    tenant String,
    requested_by String,
    reference String,
    requested_at DateTime('UTC'),
    finished_at DateTime('UTC'),
    contact_ids Array(Int64),
    phones Array(String),
    call_ids Array(Int64),
    tables Array(String),
    rows Array(UInt64),
    total_rows UInt64,
    note String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(requested_at)
ORDER BY (tenant, requested_at, request_id)
