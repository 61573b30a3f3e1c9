//! Batching: one batch per Kafka partition, so that every insert covers one contiguous
//! offset range of one partition (a *block* that can be cut again the same way after a
//! restart). Rows accumulate until a row count, a byte size or an age is reached, or,
//! when a block is being redone, until its recorded end. The flush decision is a pure
//! function of the batch and `now`.

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
    /// The batch reached the end of a block recorded before a restart.
    Block,
    Shutdown,
}

impl FlushReason {
    pub const ALL: [FlushReason; 5] = [
        FlushReason::Rows,
        FlushReason::Bytes,
        FlushReason::Age,
        FlushReason::Block,
        FlushReason::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Rows => "rows",
            FlushReason::Bytes => "bytes",
            FlushReason::Age => "age",
            FlushReason::Block => "block",
            FlushReason::Shutdown => "shutdown",
        }
    }
}

impl FlushPolicy {
    /// Whether `batch` must be written at `now`, and why. A batch redoing a recorded
    /// block is written exactly when it reaches that block's last offset, whatever its
    /// size or age, so that the insert is the same as before.
    pub fn due(&self, batch: &Batch, now: Instant) -> Option<FlushReason> {
        let started = batch.started?;
        if let Some(planned) = batch.planned_last {
            return (batch.last_offset >= planned).then_some(FlushReason::Block);
        }
        if batch.events >= self.max_rows {
            Some(FlushReason::Rows)
        } else if batch.bytes >= self.max_bytes {
            Some(FlushReason::Bytes)
        } else if now.saturating_duration_since(started) >= self.max_age {
            Some(FlushReason::Age)
        } else {
            None
        }
    }
}

/// Rows of one partition waiting to be written, and the offsets they cover.
#[derive(Debug, Default)]
pub struct Batch {
    pub tables: Tables,
    /// First and last offset read into the batch (meaningful once `started` is set).
    pub first_offset: i64,
    pub last_offset: i64,
    /// The last offset of the block this batch redoes, when one was recorded before.
    pub planned_last: Option<i64>,
    /// The incarnation of the partition's topic the block belongs to (see `block`).
    pub epoch: u32,
    /// Fingerprint of the block's first record (see `block::fingerprint`).
    pub first_record: u64,
    /// The `loaded_at` its rows carry, chosen once per block, Unix milliseconds.
    pub loaded_at_ms: u64,
    /// The offset of each event, in the order of `tables.raw` (every event has exactly
    /// one raw row), to name the record of a row ClickHouse refuses.
    pub raw_offsets: Vec<i64>,
    /// One span per record, continuing its webhook's trace; closed once it is written.
    pub spans: Vec<tracing::Span>,
    /// Messages in the batch.
    pub events: usize,
    pub bytes: usize,
    /// When the first message of the batch arrived; `None` while nothing is pending.
    pub started: Option<Instant>,
}

impl Batch {
    /// Adds the rows of a normalized event read at `offset`.
    pub fn add_event(&mut self, event: NormalizedEvent, offset: i64, now: Instant) {
        let bytes = self.tables.add_event(event);
        self.raw_offsets.push(offset);
        self.count(bytes, offset, now);
    }

    /// Adds a dead letter read at `offset`.
    pub fn add_dead_letter(&mut self, letter: DeadLetter, offset: i64, now: Instant) {
        let bytes = self.tables.add_dead_letter(letter);
        self.count(bytes, offset, now);
    }

    /// Counts a message that adds no rows (it was dead-lettered), so its offset is
    /// stored with the batch.
    pub fn skip(&mut self, offset: i64, now: Instant) {
        self.count(0, offset, now);
    }

    fn count(&mut self, bytes: usize, offset: i64, now: Instant) {
        if self.started.is_none() {
            self.started = Some(now);
            self.first_offset = offset;
        }
        self.events += 1;
        self.bytes += bytes;
        self.last_offset = self.last_offset.max(offset);
    }

    /// The offset an event was read at.
    pub fn offset_of(&self, event_id: &str) -> Option<i64> {
        let index = self
            .tables
            .raw
            .iter()
            .position(|r| r.event_id == event_id)?;
        self.raw_offsets.get(index).copied()
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

    #[test]
    fn an_empty_batch_is_never_due() {
        let t0 = Instant::now();
        assert_eq!(
            POLICY.due(&Batch::default(), t0 + Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn flushes_when_the_row_count_is_reached() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        for offset in 0..2 {
            batch.add_event(event(1), offset, t0);
        }
        assert_eq!(POLICY.due(&batch, t0), None);
        batch.add_event(event(1), 2, t0);
        assert_eq!(POLICY.due(&batch, t0), Some(FlushReason::Rows));
    }

    #[test]
    fn flushes_when_the_byte_size_is_reached() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        batch.add_event(event(20_000), 0, t0);
        assert_eq!(POLICY.due(&batch, t0), Some(FlushReason::Bytes));
    }

    #[test]
    fn flushes_when_the_first_row_is_old_enough() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        batch.add_event(event(1), 0, t0);
        batch.add_event(event(1), 1, t0 + Duration::from_millis(400));
        assert_eq!(POLICY.due(&batch, t0 + Duration::from_millis(499)), None);
        assert_eq!(
            POLICY.due(&batch, t0 + Duration::from_millis(500)),
            Some(FlushReason::Age)
        );
    }

    #[test]
    fn covers_one_offset_range_and_counts_dead_letters() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        batch.add_event(event(1), 5, t0);
        batch.skip(6, t0);
        batch.add_event(event(1), 7, t0);
        assert_eq!((batch.first_offset, batch.last_offset), (5, 7));
        assert_eq!((batch.events, batch.tables.raw.len()), (3, 2));
        assert_eq!(batch.offset_of("e"), Some(5));
        assert_eq!(batch.offset_of("other"), None);
    }

    #[test]
    fn a_redone_block_is_written_at_its_recorded_end_and_not_before() {
        let t0 = Instant::now();
        let mut batch = Batch {
            planned_last: Some(12),
            ..Batch::default()
        };
        for offset in 10..12 {
            batch.add_event(event(20_000), offset, t0);
        }
        // Over every limit, but the block before the restart went up to 12.
        assert_eq!(POLICY.due(&batch, t0 + Duration::from_secs(60)), None);
        batch.add_event(event(1), 12, t0);
        assert_eq!(POLICY.due(&batch, t0), Some(FlushReason::Block));
    }
}
