//! Prometheus metrics of `transform`, served on `METRICS_LISTEN`. Names follow
//! `transform_<name>_<unit>[_total]`; label sets are bounded. Updated once per batch.

use std::time::Duration;

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};
use runtime::metrics::{counter, counter_vec, gauge, histogram, COUNT_BUCKETS, SECONDS_BUCKETS};

/// Raw records consumed.
pub const RECORDS_IN_TOTAL: &str = "transform_records_in_total";
/// Records produced, by output (`normalized`, `dlq`).
pub const RECORDS_OUT_TOTAL: &str = "transform_records_out_total";
/// Raw records per batch.
pub const BATCH_RECORDS: &str = "transform_batch_records";
/// Time to normalize a batch and have Kafka acknowledge its outputs.
pub const BATCH_DURATION_SECONDS: &str = "transform_batch_duration_seconds";
/// Records of webhooks.raw not yet committed by the group (from librdkafka statistics).
pub const CONSUMER_LAG_RECORDS: &str = "transform_consumer_lag_records";

/// Every transform metric, registered in one registry.
pub struct Metrics {
    pub registry: Registry,
    records_in: IntCounter,
    records_out: IntCounterVec,
    batch_records: Histogram,
    batch_duration: Histogram,
    pub lag: IntGauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let registry = Registry::new();
        let metrics = Metrics {
            records_in: counter(&registry, RECORDS_IN_TOTAL, "Raw records consumed."),
            records_out: counter_vec(
                &registry,
                RECORDS_OUT_TOTAL,
                "Records produced, by output.",
                &["output"],
            ),
            batch_records: histogram(
                &registry,
                BATCH_RECORDS,
                "Raw records per batch.",
                COUNT_BUCKETS,
            ),
            batch_duration: histogram(
                &registry,
                BATCH_DURATION_SECONDS,
                "Time to normalize a batch and have its outputs acknowledged.",
                SECONDS_BUCKETS,
            ),
            lag: gauge(
                &registry,
                CONSUMER_LAG_RECORDS,
                "Records of the raw topic not yet committed by the group.",
            ),
            registry,
        };
        // Every label value exists from the start, so rates read 0 rather than nothing.
        for output in ["normalized", "dlq"] {
            metrics.records_out.with_label_values(&[output]);
        }
        metrics
    }
}

impl Metrics {
    /// Records one acknowledged batch.
    pub fn batch(&self, records: usize, normalized: u64, dead_lettered: u64, took: Duration) {
        self.records_in.inc_by(records as u64);
        self.records_out
            .with_label_values(&["normalized"])
            .inc_by(normalized);
        self.records_out
            .with_label_values(&["dlq"])
            .inc_by(dead_lettered);
        self.batch_records.observe(records as f64);
        self.batch_duration.observe(took.as_secs_f64());
    }
}
