//! Prometheus metrics of `ingest`, served on `/metrics`. Names follow
//! `ingest_<name>_<unit>[_total]`; label sets are bounded (status codes, reasons).

use std::time::Duration;

use crate::spool::Spool;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// HTTP requests answered, by status code.
pub const REQUESTS_TOTAL: &str = "ingest_requests_total";
/// Request latency.
pub const REQUEST_DURATION_SECONDS: &str = "ingest_request_duration_seconds";
/// Deliveries refused or put off, by reason (forbidden, not_found, too_large,
/// kafka_refused, header_too_large, malformed_request; and for 503s: unavailable,
/// overloaded, over_memory_budget, body_timeout, shutting_down).
pub const REJECTED_TOTAL: &str = "ingest_rejected_total";
/// Rejected deliveries not recorded in the dead-letter topic because of the rate bound.
pub const REJECTED_UNRECORDED_TOTAL: &str = "ingest_rejected_unrecorded_total";
/// Time for Kafka to acknowledge a direct delivery.
pub const PRODUCE_DURATION_SECONDS: &str = "ingest_produce_duration_seconds";
/// Deliveries waiting in the spool, and their bytes.
pub const SPOOL_EVENTS: &str = "ingest_spool_events";
pub const SPOOL_BYTES: &str = "ingest_spool_bytes";
/// Length of the spool file.
pub const SPOOL_FILE_BYTES: &str = "ingest_spool_file_bytes";
/// Spooled deliveries moved to Kafka.
pub const SPOOL_DRAINED_TOTAL: &str = "ingest_spool_drained_total";
/// Bytes of the memory budget held by bodies (copies included).
pub const BODY_MEMORY_BYTES: &str = "ingest_body_memory_bytes";
/// Connections closed without an answer, by reason (slow_headers, incomplete_body).
pub const CONNECTIONS_DROPPED_TOTAL: &str = "ingest_connections_dropped_total";

/// Every ingest metric, registered in one registry.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: Histogram,
    rejected: IntCounterVec,
    rejected_unrecorded: IntCounter,
    produce_duration: Histogram,
    spool_events: IntGauge,
    spool_bytes: IntGauge,
    spool_file_bytes: IntGauge,
    spool_drained: IntCounter,
    body_memory: IntGauge,
    dropped: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
                .expect("valid histogram")
        };
        let metrics = Metrics {
            requests: IntCounterVec::new(
                Opts::new(REQUESTS_TOTAL, "HTTP requests answered, by status code."),
                &["status"],
            )
            .expect("valid counter"),
            request_duration: histogram(REQUEST_DURATION_SECONDS, "Time from request to answer."),
            rejected: IntCounterVec::new(
                Opts::new(REJECTED_TOTAL, "Deliveries refused, by reason."),
                &["reason"],
            )
            .expect("valid counter"),
            rejected_unrecorded: IntCounter::new(
                REJECTED_UNRECORDED_TOTAL,
                "Rejected deliveries counted but not recorded (rate bound).",
            )
            .expect("valid counter"),
            produce_duration: histogram(
                PRODUCE_DURATION_SECONDS,
                "Time for Kafka to acknowledge a delivery.",
            ),
            spool_events: IntGauge::new(SPOOL_EVENTS, "Deliveries waiting in the spool.")
                .expect("valid gauge"),
            spool_bytes: IntGauge::new(SPOOL_BYTES, "Bytes waiting in the spool.")
                .expect("valid gauge"),
            spool_file_bytes: IntGauge::new(SPOOL_FILE_BYTES, "Length of the spool file.")
                .expect("valid gauge"),
            spool_drained: IntCounter::new(
                SPOOL_DRAINED_TOTAL,
                "Spooled deliveries moved to Kafka.",
            )
            .expect("valid counter"),
            body_memory: IntGauge::new(
                BODY_MEMORY_BYTES,
                "Bytes of the memory budget held by bodies.",
            )
            .expect("valid gauge"),
            dropped: IntCounterVec::new(
                Opts::new(
                    CONNECTIONS_DROPPED_TOTAL,
                    "Connections closed without an answer, by reason.",
                ),
                &["reason"],
            )
            .expect("valid counter"),
            registry,
        };
        let r = &metrics.registry;
        r.register(Box::new(metrics.requests.clone()))
            .expect("unique");
        r.register(Box::new(metrics.request_duration.clone()))
            .expect("unique");
        r.register(Box::new(metrics.rejected.clone()))
            .expect("unique");
        r.register(Box::new(metrics.rejected_unrecorded.clone()))
            .expect("unique");
        r.register(Box::new(metrics.produce_duration.clone()))
            .expect("unique");
        r.register(Box::new(metrics.spool_events.clone()))
            .expect("unique");
        r.register(Box::new(metrics.spool_bytes.clone()))
            .expect("unique");
        r.register(Box::new(metrics.spool_file_bytes.clone()))
            .expect("unique");
        r.register(Box::new(metrics.spool_drained.clone()))
            .expect("unique");
        r.register(Box::new(metrics.body_memory.clone()))
            .expect("unique");
        r.register(Box::new(metrics.dropped.clone()))
            .expect("unique");
        metrics
    }

    pub fn request(&self, status: u16, elapsed: Duration) {
        self.answered(status);
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    /// An answer the HTTP library gave itself (no handler ran, so no duration).
    pub fn answered(&self, status: u16) {
        self.requests
            .with_label_values(&[&status.to_string()])
            .inc();
    }

    /// A connection closed without an answer.
    pub fn dropped(&self, reason: &str) {
        self.dropped.with_label_values(&[reason]).inc();
    }

    pub fn rejected(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }

    pub fn rejected_unrecorded(&self) {
        self.rejected_unrecorded.inc();
    }

    pub fn produced(&self, elapsed: Duration) {
        self.produce_duration.observe(elapsed.as_secs_f64());
    }

    pub fn spool(&self, spool: &Spool) {
        self.spool_events.set(spool.events() as i64);
        self.spool_bytes.set(spool.bytes() as i64);
        self.spool_file_bytes.set(spool.file_bytes() as i64);
    }

    pub fn body_memory(&self, bytes: usize) {
        self.body_memory.set(bytes as i64);
    }

    pub fn spool_drained(&self, n: u64) {
        self.spool_drained.inc_by(n);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of registered metrics");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_their_labels() {
        let metrics = Metrics::new();
        metrics.request(200, Duration::from_millis(3));
        metrics.request(503, Duration::from_millis(3));
        metrics.rejected("not_found");
        let text = metrics.render();
        assert!(
            text.contains(r#"ingest_requests_total{status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ingest_rejected_total{reason="not_found"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("ingest_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
