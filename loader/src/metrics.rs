//! Prometheus metrics of `loader`, served on `METRICS_LISTEN`. Names follow
//! `loader_<name>_<unit>[_total]`; label sets are bounded (topics by role, the six
//! storage tables, flush reasons). Updated once per batch.

use std::time::Duration;

use prometheus::{CounterVec, Histogram, IntCounter, IntCounterVec, IntGauge, Registry};
use runtime::metrics::{
    counter, counter_vec, float_counter_vec, gauge, histogram, COUNT_BUCKETS, SECONDS_BUCKETS,
};

use warehouse::Table;

use crate::batch::{Batch, FlushReason};

/// Records consumed, by source (`normalized`, `dlq`).
pub const RECORDS_IN_TOTAL: &str = "loader_records_in_total";
/// Rows ClickHouse accepted, by storage table.
pub const ROWS_WRITTEN_TOTAL: &str = "loader_rows_written_total";
/// Insert statements ClickHouse accepted, by storage table (each one a new part).
pub const INSERTS_TOTAL: &str = "loader_inserts_total";
/// Batches written, by flush reason (`rows`, `bytes`, `age`, `idle`, `block`, `shutdown`).
pub const BATCHES_TOTAL: &str = "loader_batches_total";
/// Records per batch.
pub const BATCH_RECORDS: &str = "loader_batch_records";
/// Time to write one batch (all its tables), retries included.
pub const INSERT_DURATION_SECONDS: &str = "loader_insert_duration_seconds";
/// Failed insert attempts that were retried.
pub const INSERT_RETRIES_TOTAL: &str = "loader_insert_retries_total";
/// Records sent to the DLQ by the loader, by reason (`undecodable`, `refused`).
pub const DEAD_LETTERED_TOTAL: &str = "loader_dead_lettered_total";
/// Time from ingest's receipt of an event to the insert that stored it.
pub const EVENT_DELAY_SECONDS: &str = "loader_event_delay_seconds";
/// Records of the consumed topics not yet committed by the group.
pub const CONSUMER_LAG_RECORDS: &str = "loader_consumer_lag_records";
/// Deliveries not written because their event was stored with an earlier receipt.
pub const DUPLICATES_DROPPED_TOTAL: &str = "loader_duplicates_dropped_total";
/// Times a partition's offsets were found restarted (topic recreated, Kafka data reset).
pub const OFFSETS_RESTARTED_TOTAL: &str = "loader_offsets_restarted_total";
/// Seconds spent waiting on ClickHouse, by step: each storage table's inserts (the
/// table's name), and `receipts`, `key_days`, `entity_keys`, `block_log`.
pub const CLICKHOUSE_SECONDS_TOTAL: &str = "loader_clickhouse_seconds_total";

/// A request the loader waits on ClickHouse for, besides a storage table's inserts.
#[derive(Debug, Clone, Copy)]
pub enum Request {
    /// Reading the receipts of recent events (at start and on resuming a partition).
    Receipts,
    /// Reading the days of entities not in memory.
    KeyDays,
    /// Inserting the days of entities seen for the first time.
    EntityKeys,
    /// Recording a block in `loader_blocks` (before and after writing it).
    BlockLog,
}

impl Request {
    const ALL: [Request; 4] = [
        Request::Receipts,
        Request::KeyDays,
        Request::EntityKeys,
        Request::BlockLog,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Request::Receipts => "receipts",
            Request::KeyDays => "key_days",
            Request::EntityKeys => "entity_keys",
            Request::BlockLog => "block_log",
        }
    }
}

/// The topic a record was read from (the `source` label of `loader_records_in_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Normalized = 0,
    Dlq = 1,
}

impl Source {
    const ALL: [Source; 2] = [Source::Normalized, Source::Dlq];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Normalized => "normalized",
            Source::Dlq => "dlq",
        }
    }
}

/// Every loader metric, registered in one registry.
pub struct Metrics {
    pub registry: Registry,
    /// `loader_records_in_total` of each [`Source`], resolved once (it counts every
    /// record read).
    records_in: [IntCounter; 2],
    rows_written: IntCounterVec,
    inserts: IntCounterVec,
    batches: IntCounterVec,
    batch_records: Histogram,
    insert_duration: Histogram,
    pub insert_retries: IntCounter,
    dead_lettered: IntCounterVec,
    event_delay: Histogram,
    pub lag: IntGauge,
    pub offsets_restarted: IntCounter,
    pub duplicates_dropped: IntCounter,
    clickhouse_seconds: CounterVec,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let registry = Registry::new();
        let records_in = counter_vec(
            &registry,
            RECORDS_IN_TOTAL,
            "Records read from Kafka, by source topic (counted as read, before they are written).",
            &["source"],
        );
        let metrics = Metrics {
            records_in: Source::ALL.map(|source| records_in.with_label_values(&[source.as_str()])),
            rows_written: counter_vec(
                &registry,
                ROWS_WRITTEN_TOTAL,
                "Rows ClickHouse accepted, by storage table.",
                &["table"],
            ),
            inserts: counter_vec(
                &registry,
                INSERTS_TOTAL,
                "Insert statements ClickHouse accepted, by storage table.",
                &["table"],
            ),
            batches: counter_vec(
                &registry,
                BATCHES_TOTAL,
                "Batches written, by flush reason.",
                &["reason"],
            ),
            batch_records: histogram(
                &registry,
                BATCH_RECORDS,
                "Records per batch.",
                COUNT_BUCKETS,
            ),
            insert_duration: histogram(
                &registry,
                INSERT_DURATION_SECONDS,
                "Time to write one batch, retries included.",
                SECONDS_BUCKETS,
            ),
            insert_retries: counter(
                &registry,
                INSERT_RETRIES_TOTAL,
                "Failed insert attempts that were retried.",
            ),
            dead_lettered: counter_vec(
                &registry,
                DEAD_LETTERED_TOTAL,
                "Records the loader sent to the DLQ, by reason.",
                &["reason"],
            ),
            event_delay: histogram(
                &registry,
                EVENT_DELAY_SECONDS,
                "Time from ingest's receipt of an event to its insert.",
                SECONDS_BUCKETS,
            ),
            lag: gauge(
                &registry,
                CONSUMER_LAG_RECORDS,
                "Records of the consumed topics not yet committed by the group.",
            ),
            duplicates_dropped: counter(
                &registry,
                DUPLICATES_DROPPED_TOTAL,
                "Deliveries not written: their event was stored with an earlier receipt.",
            ),
            offsets_restarted: counter(
                &registry,
                OFFSETS_RESTARTED_TOTAL,
                "Times a partition's offsets were found restarted (a new epoch of blocks).",
            ),
            clickhouse_seconds: float_counter_vec(
                &registry,
                CLICKHOUSE_SECONDS_TOTAL,
                "Seconds spent waiting on ClickHouse, by step (a storage table's inserts, receipts, key_days, entity_keys, block_log).",
                &["step"],
            ),
            registry,
        };
        // Every label value exists from the start, so rates read 0 rather than nothing.
        for table in Table::ALL {
            metrics.rows_written.with_label_values(&[table.name()]);
            metrics.inserts.with_label_values(&[table.name()]);
            metrics
                .clickhouse_seconds
                .with_label_values(&[table.name()]);
        }
        for step in Request::ALL {
            metrics
                .clickhouse_seconds
                .with_label_values(&[step.as_str()]);
        }
        for reason in FlushReason::ALL {
            metrics.batches.with_label_values(&[reason.as_str()]);
        }
        for reason in ["undecodable", "refused"] {
            metrics.dead_lettered.with_label_values(&[reason]);
        }
        metrics
    }
}

impl Metrics {
    /// One record read from `source`, whatever becomes of it.
    pub fn record_in(&self, source: Source) {
        self.records_in[source as usize].inc();
    }

    /// Records one written batch.
    pub fn batch(
        &self,
        batch: &Batch,
        reason: FlushReason,
        refused: usize,
        took: Duration,
        now_ms: i64,
    ) {
        for (table, rows) in batch.tables.counts() {
            if rows > 0 {
                self.rows_written
                    .with_label_values(&[table.name()])
                    .inc_by(rows as u64);
            }
        }
        self.batches.with_label_values(&[reason.as_str()]).inc();
        self.batch_records.observe(batch.events as f64);
        self.insert_duration.observe(took.as_secs_f64());
        if refused > 0 {
            self.dead_lettered("refused", refused as u64);
        }
        for row in &batch.tables.raw {
            let delay_ms = (now_ms - row.received_at_ms as i64).max(0);
            self.event_delay.observe(delay_ms as f64 / 1000.0);
        }
    }

    /// Counts one insert statement the server accepted.
    pub fn inserted(&self, table: Table) {
        self.inserts.with_label_values(&[table.name()]).inc();
    }

    /// Adds the time one insert statement into `table` took, accepted or not.
    pub fn inserting(&self, table: Table, took: Duration) {
        self.clickhouse_seconds
            .with_label_values(&[table.name()])
            .inc_by(took.as_secs_f64());
    }

    /// Adds the time one other request to ClickHouse took, answered or not.
    pub fn waited(&self, step: Request, took: Duration) {
        self.clickhouse_seconds
            .with_label_values(&[step.as_str()])
            .inc_by(took.as_secs_f64());
    }

    pub fn dead_lettered(&self, reason: &str, n: u64) {
        self.dead_lettered.with_label_values(&[reason]).inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `name{label="value"}` in the registry.
    fn counter(metrics: &Metrics, name: &str, label: &str, value: &str) -> Option<f64> {
        metrics
            .registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric())
            .find(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == label && l.value() == value)
            })
            .map(|m| m.get_counter().get_value())
    }

    #[test]
    fn records_in_are_counted_by_source_and_both_sources_exist_from_the_start() {
        let metrics = Metrics::default();
        for source in Source::ALL {
            assert_eq!(
                counter(&metrics, RECORDS_IN_TOTAL, "source", source.as_str()),
                Some(0.0)
            );
        }
        metrics.record_in(Source::Normalized);
        metrics.record_in(Source::Normalized);
        metrics.record_in(Source::Dlq);
        assert_eq!(
            counter(&metrics, RECORDS_IN_TOTAL, "source", "normalized"),
            Some(2.0)
        );
        assert_eq!(
            counter(&metrics, RECORDS_IN_TOTAL, "source", "dlq"),
            Some(1.0)
        );
    }
}
