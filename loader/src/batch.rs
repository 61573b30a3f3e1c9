//! Batching: the rows of one topic waiting to be written, from any of the partitions the
//! loader reads, and the offset range of each partition they cover (its *segment*). A
//! batch is written as a *block* (one insert per table), so the number of inserts does
//! not grow with the partition count. Rows accumulate until a row count, a byte size or
//! an age is reached, or, when a recorded block is being redone, until each of its
//! ranges is complete again; while the loader catches up and no block of the topic is
//! being written, an eighth of the row count or byte size is enough (see
//! `FlushPolicy::due`). The flush decision is a pure function of the batch, whether the
//! topic has a write in flight, and `now`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use schemas::{DeadLetter, NormalizedEvent};

use warehouse::Tables;

/// When a batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
}

/// Why a batch was written (a bounded label for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    Rows,
    Bytes,
    Age,
    /// The batch repeats a block recorded before a restart, and is complete again.
    Block,
    /// The loader was catching up, no block of the topic was being written, and the batch
    /// held an eighth of the row count or byte size.
    Idle,
    Shutdown,
}

impl FlushReason {
    pub const ALL: [FlushReason; 6] = [
        FlushReason::Rows,
        FlushReason::Bytes,
        FlushReason::Age,
        FlushReason::Block,
        FlushReason::Idle,
        FlushReason::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Rows => "rows",
            FlushReason::Bytes => "bytes",
            FlushReason::Age => "age",
            FlushReason::Block => "block",
            FlushReason::Idle => "idle",
            FlushReason::Shutdown => "shutdown",
        }
    }
}

/// While the loader catches up and no block of a topic is being written, a batch holding
/// this fraction of the row count or byte size is written at once (see
/// `FlushPolicy::due`)...
const IDLE_FRACTION: usize = 8;
/// ...and at least this many events or bytes: a smaller block is not worth an insert of
/// its own (and a policy with tiny caps, as in tests, keeps cutting by size).
const IDLE_MIN_EVENTS: usize = 1_000;
const IDLE_MIN_BYTES: usize = 1 << 20;

impl FlushPolicy {
    /// Whether `batch` must be written at `now`, and why; `idle` says that no block of
    /// its topic is being written. A batch repeating a recorded block is written exactly
    /// when every range of that block is complete again, whatever its size or age, so
    /// that the insert is the same as before.
    ///
    /// The row count and byte size bind while the loader catches up (a backlog after an
    /// outage, or a server slower than the records come): a block is then filled while
    /// the one before it is written. The first block of a backlog has no write to
    /// overlap, and filling it to the caps would leave the server waiting (about a
    /// second at 5.8 kB events). So a batch of records read late (`Batch::behind`: Kafka
    /// stored one of them more than `max_age` before it was read, and the broker holds
    /// at least another eighth) is written with an eighth of the caps when nothing of
    /// its topic is in flight; the blocks after it fill while it is written, and grow
    /// back to the caps as long as the loader reads faster than the server writes. A
    /// loader that keeps up reads its records within milliseconds, and its batches are
    /// unchanged: the age binds, one insert per second per table.
    pub fn due(&self, batch: &Batch, now: Instant, idle: bool) -> Option<FlushReason> {
        let started = batch.started?;
        if let Some(planned) = &batch.planned {
            return batch.completes(planned).then_some(FlushReason::Block);
        }
        if batch.events >= self.max_rows {
            Some(FlushReason::Rows)
        } else if batch.bytes >= self.max_bytes {
            Some(FlushReason::Bytes)
        } else if now.saturating_duration_since(started) >= self.max_age {
            Some(FlushReason::Age)
        } else if idle && batch.behind && self.holds_an_eighth(batch) {
            Some(FlushReason::Idle)
        } else {
            None
        }
    }

    /// Whether `batch` holds an eighth of the row count or byte size (and at least
    /// `IDLE_MIN_*`).
    fn holds_an_eighth(&self, batch: &Batch) -> bool {
        batch.events >= self.idle_events()
            || batch.bytes >= (self.max_bytes / IDLE_FRACTION).max(IDLE_MIN_BYTES)
    }

    /// The events that make a block of an eighth of the row count (at least
    /// `IDLE_MIN_EVENTS`).
    pub fn idle_events(&self) -> usize {
        (self.max_rows / IDLE_FRACTION).max(IDLE_MIN_EVENTS)
    }
}

/// The offsets of one partition a batch covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The incarnation of the topic the offsets belong to (see `block`).
    pub epoch: u32,
    pub first: i64,
    pub last: i64,
    /// Fingerprint of the record at `first` (see `block::fingerprint`).
    pub first_record: u64,
}

/// A block recorded before a restart that a batch repeats: its name and, per partition,
/// the last offset of its range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub name: String,
    pub last: BTreeMap<i32, i64>,
}

/// Rows of one topic waiting to be written, and the offsets they cover.
#[derive(Debug, Default)]
pub struct Batch {
    pub tables: Tables,
    /// Per partition, the range of offsets read into the batch.
    pub segments: BTreeMap<i32, Segment>,
    /// The recorded block this batch repeats, if it repeats one.
    pub planned: Option<Planned>,
    /// The `loaded_at` its rows carry, chosen once per block (the recorded one when a
    /// block is repeated), Unix milliseconds.
    pub loaded_at_ms: u64,
    /// The partition and offset of each event, in the order of `tables.raw` (every event
    /// has exactly one raw row), to name the record of a row ClickHouse refuses.
    pub raw_offsets: Vec<(i32, i64)>,
    /// One span per record, continuing its webhook's trace; closed once it is written.
    pub spans: Vec<tracing::Span>,
    /// Messages in the batch.
    pub events: usize,
    pub bytes: usize,
    /// When the first message of the batch arrived; `None` while nothing is pending.
    pub started: Option<Instant>,
    /// A record of the batch was read late, so the loader is catching up (see
    /// `Origin::behind`).
    pub behind: bool,
}

/// Where a message read at an offset of a partition starts its segment, when it is the
/// partition's first message in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub partition: i32,
    pub offset: i64,
    pub epoch: u32,
    pub first_record: u64,
    /// The loader was catching up when it read the record: Kafka stored it more than the
    /// policy's `max_age` before, and the consumer's statistics do not say otherwise
    /// (see `Consume::behind`).
    pub behind: bool,
}

impl Batch {
    /// A batch that repeats `planned`, with the rows' recorded `loaded_at`.
    pub fn repeating(planned: Planned, loaded_at_ms: u64) -> Batch {
        Batch {
            planned: Some(planned),
            loaded_at_ms,
            ..Batch::default()
        }
    }

    /// Adds the rows of a normalized event.
    pub fn add_event(&mut self, event: NormalizedEvent, at: Origin, now: Instant) {
        let bytes = self.tables.add_event(event);
        self.raw_offsets.push((at.partition, at.offset));
        self.count(bytes, at, now);
    }

    /// Adds a dead letter.
    pub fn add_dead_letter(&mut self, letter: DeadLetter, at: Origin, now: Instant) {
        let bytes = self.tables.add_dead_letter(letter);
        self.count(bytes, at, now);
    }

    /// Counts a message that adds no rows (it was dead-lettered), so its offset is
    /// stored with the batch.
    pub fn skip(&mut self, at: Origin, now: Instant) {
        self.count(0, at, now);
    }

    fn count(&mut self, bytes: usize, at: Origin, now: Instant) {
        self.started.get_or_insert(now);
        self.behind |= at.behind;
        self.events += 1;
        self.bytes += bytes;
        self.segments
            .entry(at.partition)
            .and_modify(|s| s.last = s.last.max(at.offset))
            .or_insert(Segment {
                epoch: at.epoch,
                first: at.offset,
                last: at.offset,
                first_record: at.first_record,
            });
    }

    /// Whether every range of `planned` is read in full.
    fn completes(&self, planned: &Planned) -> bool {
        planned.last.iter().all(|(partition, last)| {
            self.segments
                .get(partition)
                .is_some_and(|s| s.last >= *last)
        })
    }

    /// The partition and offset an event was read at.
    pub fn offset_of(&self, event_id: &str) -> Option<(i32, i64)> {
        let index = self
            .tables
            .raw
            .iter()
            .position(|r| r.event_id == event_id)?;
        self.raw_offsets.get(index).copied()
    }

    /// Whether `partition` has records in the batch.
    pub fn covers(&self, partition: i32) -> bool {
        self.segments.contains_key(&partition)
    }

    pub fn is_empty(&self) -> bool {
        self.started.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::NormalizedEvent;

    const POLICY: FlushPolicy = FlushPolicy {
        max_rows: 3,
        max_bytes: 10_000,
        max_age: Duration::from_millis(500),
    };

    fn event(payload_len: usize) -> NormalizedEvent {
        NormalizedEvent {
            event_id: "e".into(),
            tenant: "t".into(),
            event: "call-ended".into(),
            payload: "x".repeat(payload_len),
            ..NormalizedEvent::default()
        }
    }

    fn at(partition: i32, offset: i64) -> Origin {
        Origin {
            partition,
            offset,
            epoch: 0,
            first_record: 7,
            behind: false,
        }
    }

    fn late(partition: i32, offset: i64) -> Origin {
        Origin {
            behind: true,
            ..at(partition, offset)
        }
    }

    #[test]
    fn an_empty_batch_is_never_due() {
        let t0 = Instant::now();
        assert_eq!(
            POLICY.due(&Batch::default(), t0 + Duration::from_secs(60), true),
            None
        );
    }

    #[test]
    fn flushes_when_the_row_count_is_reached() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        for offset in 0..2 {
            batch.add_event(event(1), at(0, offset), t0);
        }
        assert_eq!(POLICY.due(&batch, t0, false), None);
        batch.add_event(event(1), at(1, 0), t0);
        assert_eq!(POLICY.due(&batch, t0, false), Some(FlushReason::Rows));
    }

    #[test]
    fn flushes_when_the_byte_size_is_reached() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        batch.add_event(event(20_000), at(0, 0), t0);
        assert_eq!(POLICY.due(&batch, t0, false), Some(FlushReason::Bytes));
    }

    #[test]
    fn flushes_when_the_first_row_is_old_enough() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        batch.add_event(event(1), at(0, 0), t0);
        batch.add_event(event(1), at(2, 9), t0 + Duration::from_millis(400));
        assert_eq!(
            POLICY.due(&batch, t0 + Duration::from_millis(499), false),
            None
        );
        assert_eq!(
            POLICY.due(&batch, t0 + Duration::from_millis(500), false),
            Some(FlushReason::Age)
        );
    }

    const CATCHING_UP: FlushPolicy = FlushPolicy {
        max_rows: 16_000,
        max_bytes: 16 << 20,
        max_age: Duration::from_secs(1),
    };

    #[test]
    fn catching_up_with_no_write_in_flight_an_eighth_of_the_row_count_is_enough() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        batch.add_event(event(1), late(0, 0), t0);
        for offset in 1..1_999 {
            batch.add_event(event(1), at(0, offset), t0);
        }
        assert_eq!(CATCHING_UP.due(&batch, t0, true), None);
        batch.add_event(event(1), at(0, 1_999), t0);
        assert_eq!(
            CATCHING_UP.due(&batch, t0, false),
            None,
            "a block is in flight"
        );
        assert_eq!(CATCHING_UP.due(&batch, t0, true), Some(FlushReason::Idle));
    }

    #[test]
    fn catching_up_with_no_write_in_flight_an_eighth_of_the_byte_size_is_enough() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        // 2 MiB (an eighth of 16 MiB) in ten events.
        for offset in 0..10 {
            batch.add_event(event(210_000), late(0, offset), t0);
        }
        assert_eq!(CATCHING_UP.due(&batch, t0, false), None);
        assert_eq!(CATCHING_UP.due(&batch, t0, true), Some(FlushReason::Idle));
        let mut short = Batch::default();
        for offset in 0..9 {
            short.add_event(event(210_000), late(0, offset), t0);
        }
        assert_eq!(CATCHING_UP.due(&short, t0, true), None, "1.9 MB of 2 MiB");
    }

    #[test]
    fn a_repeated_block_is_not_cut_early_while_catching_up() {
        let t0 = Instant::now();
        let planned = Planned {
            name: "g:t:0:0-2999".into(),
            last: BTreeMap::from([(0, 2_999)]),
        };
        let mut batch = Batch::repeating(planned, 1);
        for offset in 0..2_999 {
            batch.add_event(event(1), late(0, offset), t0);
        }
        assert_eq!(CATCHING_UP.due(&batch, t0, true), None);
        batch.add_event(event(1), late(0, 2_999), t0);
        assert_eq!(CATCHING_UP.due(&batch, t0, true), Some(FlushReason::Block));
    }

    #[test]
    fn records_read_as_they_come_wait_for_the_caps_or_the_age() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        for offset in 0..2_000 {
            batch.add_event(event(1), at(0, offset), t0);
        }
        assert_eq!(CATCHING_UP.due(&batch, t0, true), None);
        assert_eq!(
            CATCHING_UP.due(&batch, t0 + Duration::from_secs(1), true),
            Some(FlushReason::Age)
        );
    }

    #[test]
    fn tiny_caps_keep_cutting_by_size_while_catching_up() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        // An eighth of 10,000 bytes, but under the 1 MiB floor.
        batch.add_event(event(2_000), late(0, 0), t0);
        assert_eq!(POLICY.due(&batch, t0, true), None);
        batch.add_event(event(1), late(0, 1), t0);
        assert_eq!(POLICY.due(&batch, t0, true), None);
        batch.add_event(event(1), late(0, 2), t0);
        assert_eq!(POLICY.due(&batch, t0, true), Some(FlushReason::Rows));
    }

    #[test]
    fn covers_one_offset_range_per_partition_and_counts_dead_letters() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        batch.add_event(event(1), at(0, 5), t0);
        batch.add_event(event(1), at(1, 40), t0);
        batch.skip(at(0, 6), t0);
        batch.add_event(event(1), at(0, 7), t0);
        let ranges: Vec<(i32, i64, i64)> = batch
            .segments
            .iter()
            .map(|(p, s)| (*p, s.first, s.last))
            .collect();
        assert_eq!(ranges, [(0, 5, 7), (1, 40, 40)]);
        assert_eq!((batch.events, batch.tables.raw.len()), (4, 3));
        assert_eq!(batch.offset_of("e"), Some((0, 5)));
        assert_eq!(batch.offset_of("other"), None);
    }

    #[test]
    fn a_repeated_block_is_written_when_every_range_is_complete_and_not_before() {
        let t0 = Instant::now();
        let planned = Planned {
            name: "g:t:0:10-12,1:3-3".into(),
            last: BTreeMap::from([(0, 12), (1, 3)]),
        };
        let mut batch = Batch::repeating(planned, 1);
        for offset in 10..=12 {
            batch.add_event(event(20_000), at(0, offset), t0);
        }
        // Over every limit, but partition 1's range is not read yet.
        assert_eq!(POLICY.due(&batch, t0 + Duration::from_secs(60), true), None);
        batch.add_event(event(1), at(1, 3), t0);
        assert_eq!(POLICY.due(&batch, t0, false), Some(FlushReason::Block));
    }
}
