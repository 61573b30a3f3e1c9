-- 0004: a delivery ingest refused names its HTTP status and its source address in
-- columns of their own (dead letter schema v2), instead of in the partition and key
-- columns, which keep their Kafka meaning.
--
-- ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: the loader (and sqlcheck) treat
-- "column already exists" as done, so an interrupted migration can run again.

ALTER TABLE {db}.dead_letters_store ADD COLUMN http_status Nullable(UInt16) AFTER failed_at_ms;

ALTER TABLE {db}.dead_letters_store ADD COLUMN source_addr String AFTER http_status;

-- 18.16 has no DROP VIEW; DROP TABLE drops a view on every version.
DROP TABLE IF EXISTS {db}.dead_letters;

CREATE VIEW IF NOT EXISTS {db}.dead_letters AS
SELECT
    stage, reason, event_id, tenant, event, source_topic, source_partition, source_offset,
    key, payload, failed_at, http_status, source_addr, loaded_at
FROM {db}.dead_letters_store FINAL;
