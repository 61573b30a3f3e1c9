//! Batching: rows accumulate until a row count, a byte size or an age is reached. The
//! flush decision is a pure function of the batch and `now`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use schemas::{DeadLetter, NormalizedEvent};

use crate::rows::Tables;

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
    Shutdown,
}

impl FlushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Rows => "rows",
            FlushReason::Bytes => "bytes",
            FlushReason::Age => "age",
            FlushReason::Shutdown => "shutdown",
        }
    }
}

impl FlushPolicy {
    /// Whether `batch` must be written at `now`, and why.
    pub fn due(&self, batch: &Batch, now: Instant) -> Option<FlushReason> {
        let started = batch.started?;
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

/// Rows waiting to be written, and the Kafka offsets they cover.
#[derive(Debug, Default)]
pub struct Batch {
    pub tables: Tables,
    /// Highest offset seen per (topic, partition), stored once the batch is written.
    pub offsets: BTreeMap<(String, i32), i64>,
    /// Messages in the batch.
    pub events: usize,
    pub bytes: usize,
    /// When the first message of the batch arrived; `None` while nothing is pending.
    pub started: Option<Instant>,
}

impl Batch {
    /// Adds the rows of a normalized event read at `topic`/`partition`/`offset`.
    pub fn add_event(
        &mut self,
        event: NormalizedEvent,
        topic: &str,
        partition: i32,
        offset: i64,
        now: Instant,
    ) {
        let bytes = self.tables.add_event(event);
        self.count(bytes, topic, partition, offset, now);
    }

    /// Adds a dead letter read at `topic`/`partition`/`offset`.
    pub fn add_dead_letter(
        &mut self,
        letter: DeadLetter,
        topic: &str,
        partition: i32,
        offset: i64,
        now: Instant,
    ) {
        let bytes = self.tables.add_dead_letter(letter);
        self.count(bytes, topic, partition, offset, now);
    }

    /// Counts a message that adds no rows (it was dead-lettered), so its offset is
    /// stored with the batch.
    pub fn skip(&mut self, topic: &str, partition: i32, offset: i64, now: Instant) {
        self.count(0, topic, partition, offset, now);
    }

    fn count(&mut self, bytes: usize, topic: &str, partition: i32, offset: i64, now: Instant) {
        self.started.get_or_insert(now);
        self.events += 1;
        self.bytes += bytes;
        let stored = self
            .offsets
            .entry((topic.to_owned(), partition))
            .or_insert(offset);
        *stored = (*stored).max(offset);
    }

    pub fn is_empty(&self) -> bool {
        self.started.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{NormalizedEvent, Status};

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
            status: Status::Normalized,
            entity: String::new(),
            entity_id: String::new(),
            received_at: 0,
            source_addr: String::new(),
            payload: "x".repeat(payload_len),
            error: String::new(),
            call: None,
            contact: None,
            contact_list: None,
            message: None,
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
            batch.add_event(event(1), "n", 0, offset, t0);
        }
        assert_eq!(POLICY.due(&batch, t0), None);
        batch.add_event(event(1), "n", 0, 2, t0);
        assert_eq!(POLICY.due(&batch, t0), Some(FlushReason::Rows));
    }

    #[test]
    fn flushes_when_the_byte_size_is_reached() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        batch.add_event(event(20_000), "n", 0, 0, t0);
        assert_eq!(POLICY.due(&batch, t0), Some(FlushReason::Bytes));
    }

    #[test]
    fn flushes_when_the_first_row_is_old_enough() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        batch.add_event(event(1), "n", 0, 0, t0);
        batch.add_event(event(1), "n", 0, 1, t0 + Duration::from_millis(400));
        assert_eq!(POLICY.due(&batch, t0 + Duration::from_millis(499)), None);
        assert_eq!(
            POLICY.due(&batch, t0 + Duration::from_millis(500)),
            Some(FlushReason::Age)
        );
    }

    #[test]
    fn keeps_the_highest_offset_per_partition_and_counts_dead_letters() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        batch.add_event(event(1), "n", 0, 5, t0);
        batch.skip("n", 0, 6, t0);
        batch.add_event(event(1), "n", 1, 2, t0);
        assert_eq!(batch.offsets[&("n".to_owned(), 0)], 6);
        assert_eq!(batch.offsets[&("n".to_owned(), 1)], 2);
        assert_eq!((batch.events, batch.tables.raw.len()), (3, 2));
    }
}
