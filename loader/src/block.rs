//! Blocks: the unit of exactly-once writing. A block is the offset ranges of one or more
//! partitions of a topic, written as one insert per table, each with a deduplication
//! token derived from the block's name. Every block is recorded in `loader_blocks`
//! before it is written, and marked done once every insert went in. After a crash the
//! loader reads the record of the offsets it resumes from: a done block's records are
//! skipped (their rows are in ClickHouse), and a block that was being written is cut
//! again exactly, so a server with insert deduplication tokens drops the inserts that had
//! gone in.
//!
//! A block's name gives each range's topic *incarnation* (an epoch) as well as its
//! offsets: when Kafka's data is wiped or a topic is recreated while ClickHouse keeps its
//! data, offsets start again at 0, and blocks cut from the new records would otherwise
//! carry the tokens of old blocks, which the server would silently drop. The loader
//! notices the restart when a block it recorded at an offset started with another record
//! than the one it reads there now, and moves the partition to the next epoch.
//! The planning is pure; the loader feeds it what `loader_blocks` says.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::batch::Segment;

/// A range of a block, as `loader_blocks` recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub epoch: u32,
    pub last_offset: i64,
    /// [`fingerprint`] of the range's first record; 0 for ranges recorded before the
    /// loader kept it (taken as the same record).
    pub first_record: u64,
    /// The `loaded_at` the block's rows carry, in Unix milliseconds; 0 when unknown.
    pub loaded_at_ms: u64,
    /// The name of the block the range belongs to.
    pub block: String,
    /// Whether every insert of the block went in.
    pub done: bool,
}

/// What to do with a partition's records from the offset where a plan is made on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// New records: they go into the next block.
    New,
    /// Records up to `last` were written by a block that completed: skip them.
    Skip { last: i64 },
    /// Records up to `last` belong to `block`, which was being written: cut it again.
    Repeat {
        block: String,
        last: i64,
        loaded_at_ms: u64,
    },
}

/// How a partition's records are handled from some offset on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub epoch: u32,
    pub step: Step,
    /// Whether the partition's offsets restarted (a new epoch begins here).
    pub restarted: bool,
}

/// Decides for a partition resumed at an offset where `recorded` is the range
/// `loader_blocks` holds (the newest), `max_epoch` the partition's newest epoch, and
/// `first_record` the fingerprint of the record read there now.
pub fn plan(recorded: Option<Recorded>, max_epoch: u32, first_record: u64) -> Plan {
    let new = |epoch, restarted| Plan {
        epoch,
        step: Step::New,
        restarted,
    };
    match recorded {
        Some(range) if range.epoch == max_epoch => {
            let same = range.first_record == first_record || range.first_record == 0;
            if !same {
                new(max_epoch + 1, true)
            } else if range.done {
                Plan {
                    epoch: max_epoch,
                    step: Step::Skip {
                        last: range.last_offset,
                    },
                    restarted: false,
                }
            } else {
                Plan {
                    epoch: max_epoch,
                    step: Step::Repeat {
                        block: range.block,
                        last: range.last_offset,
                        loaded_at_ms: range.loaded_at_ms,
                    },
                    restarted: false,
                }
            }
        }
        // A range of an older incarnation, or none: new records of the current one.
        _ => new(max_epoch, false),
    }
}

/// A stable fingerprint of a Kafka record's payload (the first 8 bytes of its SHA-256).
pub fn fingerprint(payload: &[u8]) -> u64 {
    let digest = Sha256::digest(payload);
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")).max(1)
}

/// The name of a block, the base of its inserts' deduplication tokens:
/// `group:topic:` then each range as `partition:first-last` (with `@epoch` after the
/// partition from the second incarnation on), comma-separated. A block of one range of
/// epoch 0 keeps the name blocks had when each covered one partition.
pub fn name(group: &str, topic: &str, segments: &BTreeMap<i32, Segment>) -> String {
    let ranges: Vec<String> = segments
        .iter()
        .map(|(partition, s)| {
            if s.epoch == 0 {
                format!("{partition}:{}-{}", s.first, s.last)
            } else {
                format!("{partition}@{}:{}-{}", s.epoch, s.first, s.last)
            }
        })
        .collect();
    format!("{group}:{topic}:{}", ranges.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(epoch: u32, first_record: u64, done: bool) -> Option<Recorded> {
        Some(Recorded {
            epoch,
            last_offset: 57,
            first_record,
            loaded_at_ms: 1_700_000_000_000,
            block: "g:t:0:0-57,1:0-20".into(),
            done,
        })
    }

    #[test]
    fn a_partition_resumed_inside_a_block_being_written_repeats_it() {
        let plan = plan(recorded(0, 42, false), 0, 42);
        assert_eq!(
            plan.step,
            Step::Repeat {
                block: "g:t:0:0-57,1:0-20".into(),
                last: 57,
                loaded_at_ms: 1_700_000_000_000,
            },
            "the same block, with the same loaded_at: the same bytes again"
        );
        assert_eq!((plan.epoch, plan.restarted), (0, false));
    }

    #[test]
    fn a_partition_resumed_inside_a_written_block_skips_it() {
        let plan = plan(recorded(0, 42, true), 0, 42);
        assert_eq!(plan.step, Step::Skip { last: 57 });
    }

    #[test]
    fn another_record_at_a_recorded_offset_starts_a_new_epoch() {
        // Kafka's data was wiped: offset 0 holds a new record.
        for done in [false, true] {
            let plan = plan(recorded(0, 42, done), 0, 43);
            assert_eq!(plan.step, Step::New);
            assert_eq!((plan.epoch, plan.restarted), (1, true));
        }
    }

    #[test]
    fn ranges_of_an_older_epoch_are_ignored() {
        let older = plan(recorded(0, 42, false), 1, 42);
        assert_eq!(
            (older.epoch, older.step, older.restarted),
            (1, Step::New, false)
        );
        let none = plan(None, 2, 9);
        assert_eq!((none.epoch, none.step), (2, Step::New));
    }

    #[test]
    fn ranges_recorded_without_a_fingerprint_are_taken_as_the_same_records() {
        assert!(matches!(
            plan(recorded(0, 0, false), 0, 42).step,
            Step::Repeat { .. }
        ));
    }

    #[test]
    fn names_list_every_range_and_keep_the_old_form_for_one_range_of_epoch_zero() {
        let segment = |epoch, first, last| Segment {
            epoch,
            first,
            last,
            first_record: 1,
        };
        let one = BTreeMap::from([(2, segment(0, 0, 57))]);
        assert_eq!(name("g", "t", &one), "g:t:2:0-57");
        let two = BTreeMap::from([(0, segment(0, 5, 9)), (2, segment(1, 0, 57))]);
        assert_eq!(name("g", "t", &two), "g:t:0:5-9,2@1:0-57");
    }

    #[test]
    fn fingerprints_tell_payloads_apart_and_are_never_zero() {
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
        assert_eq!(fingerprint(b"a"), fingerprint(b"a"));
        assert_ne!(fingerprint(b""), 0);
    }
}
