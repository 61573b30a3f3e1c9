-- 0005: a block names the incarnation of its topic (`epoch`), so that blocks cut after
-- Kafka's offsets restart (data wiped, topic recreated) never carry the deduplication
-- tokens of older blocks; `first_record` (a fingerprint of the block's first record) is
-- how the loader notices the restart; `loaded_at_ms` is the `loaded_at` the block's rows
-- carry, chosen by the loader once, so that a block written again is the same to the byte.
-- (ADD COLUMN of an existing column counts as applied: see 0004.)

ALTER TABLE {db}.loader_blocks ADD COLUMN epoch UInt32 AFTER partition;

ALTER TABLE {db}.loader_blocks ADD COLUMN first_record UInt64 AFTER last_offset;

ALTER TABLE {db}.loader_blocks ADD COLUMN loaded_at_ms UInt64 AFTER first_record;
