-- 0008: field discovery. What NectarDesk sends that normalization does not read
-- (kind 'unmapped'), or reads with another JSON type than it expects (kind 'mistyped'),
-- per delivery, and aggregated per tenant, event and path (README, "Field discovery").
--
-- * `unmapped_fields_store`: one row per (delivery, kind, path), written by the loader
--   from the normalized record's field report (schema v3), laid out like the other
--   per-event tables: partitioned by month, the newest load of a (delivery, path) wins.
-- * `unmapped_fields_state`: per (tenant, event, kind, path, expected, found) and day of
--   receipt, fed by a materialized view. Every aggregate is idempotent under a block
--   written twice (18.16 has no insert deduplication tokens): min, max, uniqExact and
--   maxIf do not change when a row is added again. The day in the key lets retention
--   and erasure rebuild or expire a day's examples without touching the rest.
-- * `unmapped_fields`: the reader view, one row per path. `example` is the newest
--   non-empty example (a redacted or expired example is never chosen).
--
-- Only whole-line comments: the loader drops them and splits statements on semicolons.

CREATE TABLE IF NOT EXISTS {db}.unmapped_fields_store
(
    event_id String,
    tenant String,
    event String,
    received_at DateTime('UTC'),
    received_at_ms UInt64,
    kind String,
    path String,
    expected String,
    found String,
    example String,
    loaded_at_ms UInt64
)
ENGINE = ReplacingMergeTree(loaded_at_ms)
PARTITION BY toYYYYMM(received_at)
ORDER BY (tenant, event, kind, path, received_at, event_id);

CREATE TABLE IF NOT EXISTS {db}.unmapped_fields_state
(
    tenant String,
    event String,
    kind String,
    path String,
    expected String,
    found String,
    day Date,
    s_first_seen AggregateFunction(min, DateTime('UTC')),
    s_last_seen AggregateFunction(max, DateTime('UTC')),
    s_deliveries AggregateFunction(uniqExact, String),
    s_example AggregateFunction(maxIf, Tuple(UInt64, String), UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant, event, kind, path, expected, found, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.unmapped_fields_state_mv TO {db}.unmapped_fields_state AS
SELECT
    tenant,
    event,
    kind,
    path,
    expected,
    found,
    toDate(received_at) AS day,
    minState(received_at) AS s_first_seen,
    maxState(received_at) AS s_last_seen,
    uniqExactState(event_id) AS s_deliveries,
    maxIfState((received_at_ms, example), example != '') AS s_example
FROM {db}.unmapped_fields_store
GROUP BY tenant, event, kind, path, expected, found, day;

DROP TABLE IF EXISTS {db}.unmapped_fields;

CREATE VIEW IF NOT EXISTS {db}.unmapped_fields AS
SELECT
    tenant,
    event,
    path,
    kind,
    expected,
    found,
    minMerge(s_first_seen) AS first_seen,
    maxMerge(s_last_seen) AS last_seen,
    uniqExactMerge(s_deliveries) AS deliveries,
    tupleElement(maxIfMerge(s_example), 2) AS example
FROM {db}.unmapped_fields_state
GROUP BY tenant, event, kind, path, expected, found
