-- 0006: a block may cover ranges of several partitions (one insert per table for all of
-- them). Each range row names its `block`, so that the loader can find every range of a
-- block it must cut again; `done` is set (by recording the ranges again) once every
-- insert of the block went in, so that records of a written block are skipped after a
-- restart rather than written again. (ADD COLUMN of an existing column counts as
-- applied: see 0004.)

ALTER TABLE {db}.loader_blocks ADD COLUMN block String AFTER loaded_at_ms;

ALTER TABLE {db}.loader_blocks ADD COLUMN done UInt8 AFTER block;
