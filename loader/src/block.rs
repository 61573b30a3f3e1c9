//! Blocks: the unit of exactly-once writing. A block is one offset range of one
//! partition, written as one insert per table, each with a deduplication token derived
//! from the block's identity. After a crash the loader cuts the same blocks again (they
//! are recorded in `loader_blocks` before they are written), so a server with insert
//! deduplication tokens drops the repeated inserts.
//!
//! A block's identity names the topic's *incarnation* (an epoch) as well as its offsets:
//! when Kafka's data is wiped or a topic is recreated while ClickHouse keeps its data,
//! offsets start again at 0, and blocks cut from the new records would otherwise carry the
//! tokens of old blocks, and the server would silently drop them as duplicates. The
//! loader notices the restart when a block it recorded at an offset started with another
//! record than the one it reads there now, and moves the partition to the next epoch.
//! The planning is pure; the loader feeds it what `loader_blocks` says.

use sha2::{Digest, Sha256};

/// A block as `loader_blocks` recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub epoch: u32,
    pub last_offset: i64,
    /// [`fingerprint`] of the block's first record; 0 for blocks recorded before the
    /// loader kept it (taken as the same record).
    pub first_record: u64,
    /// The `loaded_at` the block's rows carry, in Unix milliseconds; 0 when unknown.
    pub loaded_at_ms: u64,
}

/// How a batch starting at some offset is to be cut and named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub epoch: u32,
    /// The last offset of the recorded block this batch repeats, if it repeats one.
    pub planned_last: Option<i64>,
    /// The `loaded_at` of its rows: the recorded one for a repeated block, so that the
    /// insert is the same to the byte.
    pub loaded_at_ms: u64,
    /// Whether the partition's offsets restarted (a new epoch begins here).
    pub restarted: bool,
}

/// Decides how to cut a batch that starts at an offset where `recorded` is the block
/// `loader_blocks` holds (the newest), `max_epoch` the partition's newest epoch, and
/// `first_record` the fingerprint of the record read there now.
pub fn plan(recorded: Option<Recorded>, max_epoch: u32, first_record: u64, now_ms: u64) -> Plan {
    let fresh = |epoch, restarted| Plan {
        epoch,
        planned_last: None,
        loaded_at_ms: now_ms,
        restarted,
    };
    match recorded {
        Some(block) if block.epoch == max_epoch => {
            let same = block.first_record == first_record || block.first_record == 0;
            if same {
                Plan {
                    epoch: max_epoch,
                    planned_last: Some(block.last_offset),
                    loaded_at_ms: if block.loaded_at_ms == 0 {
                        now_ms
                    } else {
                        block.loaded_at_ms
                    },
                    restarted: false,
                }
            } else {
                fresh(max_epoch + 1, true)
            }
        }
        // A block of an older incarnation, or none: a new block of the current one.
        _ => fresh(max_epoch, false),
    }
}

/// A stable fingerprint of a Kafka record's payload (the first 8 bytes of its SHA-256).
pub fn fingerprint(payload: &[u8]) -> u64 {
    let digest = Sha256::digest(payload);
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")).max(1)
}

/// The name of a block, the base of its inserts' deduplication tokens:
/// `group:topic:partition:first-last`, with `@epoch` after the partition from the
/// second incarnation on (epoch 0 keeps the names blocks had before epochs existed).
pub fn name(group: &str, topic: &str, partition: i32, epoch: u32, first: i64, last: i64) -> String {
    if epoch == 0 {
        format!("{group}:{topic}:{partition}:{first}-{last}")
    } else {
        format!("{group}:{topic}:{partition}@{epoch}:{first}-{last}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn recorded(epoch: u32, first_record: u64) -> Option<Recorded> {
        Some(Recorded {
            epoch,
            last_offset: 57,
            first_record,
            loaded_at_ms: 1_700_000_000_000,
        })
    }

    #[test]
    fn a_batch_at_a_recorded_block_with_the_same_first_record_repeats_it() {
        let plan = plan(recorded(0, 42), 0, 42, NOW);
        assert_eq!(plan.planned_last, Some(57));
        assert_eq!(plan.loaded_at_ms, 1_700_000_000_000, "the same bytes again");
        assert_eq!((plan.epoch, plan.restarted), (0, false));
    }

    #[test]
    fn another_record_at_a_recorded_offset_starts_a_new_epoch() {
        // Kafka's data was wiped: offset 0 holds a new record.
        let plan = plan(recorded(0, 42), 0, 43, NOW);
        assert_eq!(plan.planned_last, None);
        assert_eq!((plan.epoch, plan.restarted), (1, true));
        assert_eq!(plan.loaded_at_ms, NOW);
    }

    #[test]
    fn blocks_of_an_older_epoch_are_not_repeated() {
        let older = plan(recorded(0, 42), 1, 42, NOW);
        assert_eq!(
            (older.epoch, older.planned_last, older.restarted),
            (1, None, false)
        );
        let none = plan(None, 2, 9, NOW);
        assert_eq!((none.epoch, none.planned_last), (2, None));
    }

    #[test]
    fn blocks_recorded_without_a_fingerprint_are_repeated() {
        assert_eq!(plan(recorded(0, 0), 0, 42, NOW).planned_last, Some(57));
    }

    #[test]
    fn names_differ_by_epoch_and_keep_the_old_form_for_epoch_zero() {
        assert_eq!(name("g", "t", 2, 0, 0, 57), "g:t:2:0-57");
        assert_eq!(name("g", "t", 2, 1, 0, 57), "g:t:2@1:0-57");
    }

    #[test]
    fn fingerprints_tell_payloads_apart_and_are_never_zero() {
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
        assert_eq!(fingerprint(b"a"), fingerprint(b"a"));
        assert_ne!(fingerprint(b""), 0);
    }
}
