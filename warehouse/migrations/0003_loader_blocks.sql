-- The offset range of every insert the loader makes, recorded before the insert (when
-- LOADER_BLOCK_LOG is on). After a crash between an insert and its offset commit, the
-- loader cuts the same ranges again, so the repeated insert carries the same
-- deduplication token and servers that support tokens drop it. The newest record of a
-- range start wins. Old months can be dropped with ALTER TABLE … DROP PARTITION.
CREATE TABLE IF NOT EXISTS {db}.loader_blocks
(
    consumer_group String,
    topic String,
    partition Int32,
    first_offset Int64,
    last_offset Int64,
    recorded_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(recorded_at)
ORDER BY (consumer_group, topic, partition, first_offset);
