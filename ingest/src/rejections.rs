//! Refused deliveries: counted by reason, and recorded (metadata and the whole body, as
//! far as the body limit) in the dead-letter topic, where they reach the `dead_letters`
//! table with stage `ingest`. Recording is bounded per second, so a flood of junk cannot
//! flood Kafka, and the client's buffer for it is bounded too; what is over either bound
//! is still counted (`ingest_rejected_unrecorded_total`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{avro, DeadLetter};

use crate::metrics::Metrics;

/// What the dead-letter producer may buffer while Kafka is slow (librdkafka's
/// `queue.buffering.max.kbytes`); records beyond it are counted, not kept.
pub const DLQ_BUFFER_BYTES: usize = 16 << 20;

/// One refused delivery.
#[derive(Debug)]
pub struct Rejection<'a> {
    /// A short label, also the metric's `reason`.
    pub reason: &'static str,
    pub status: u16,
    pub detail: String,
    pub tenant: &'a str,
    pub event: &'a str,
    pub source: String,
    pub body: &'a [u8],
}

/// Where refused deliveries are counted and recorded.
pub struct Rejections {
    metrics: Arc<Metrics>,
    sink: Option<(FutureProducer, String)>,
    per_second: u32,
    window: Mutex<(Instant, u32)>,
}

/// Leave to record one refusal (within the bound per second).
#[must_use]
pub struct Ticket<'a>(&'a Rejections);

impl Rejections {
    /// `sink`: a producer and the dead-letter topic; `None` only counts and logs.
    pub fn new(
        metrics: Arc<Metrics>,
        sink: Option<(FutureProducer, String)>,
        per_second: u32,
    ) -> Rejections {
        Rejections {
            metrics,
            sink,
            per_second,
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Counts a refusal for `reason`; returns a ticket when it may also be recorded. Ask
    /// first, so a body that will not be recorded is not read for nothing.
    pub fn admit(&self, reason: &str) -> Option<Ticket<'_>> {
        self.metrics.rejected(reason);
        if self.within_bound() {
            Some(Ticket(self))
        } else {
            self.metrics.rejected_unrecorded();
            None
        }
    }

    /// Counts and, within the bound, records a refusal.
    pub fn refuse(&self, r: Rejection<'_>) {
        if let Some(ticket) = self.admit(r.reason) {
            ticket.record(r);
        }
    }

    fn within_bound(&self) -> bool {
        let mut window = self.window.lock().expect("rejection window lock");
        if window.0.elapsed().as_secs() >= 1 {
            *window = (Instant::now(), 0);
        }
        window.1 += 1;
        window.1 <= self.per_second
    }
}

impl Ticket<'_> {
    /// Logs the refusal and sends it to the dead-letter topic (not waiting for Kafka).
    pub fn record(self, r: Rejection<'_>) {
        let Ticket(rejections) = self;
        tracing::warn!(reason = r.reason, status = r.status, tenant = r.tenant, event = r.event, source = %r.source, detail = %r.detail, body_bytes = r.body.len(), "Delivery refused");
        let Some((producer, topic)) = &rejections.sink else {
            return;
        };
        let letter = DeadLetter::refused_delivery(
            r.status,
            format!("{} {}: {}", r.status, r.reason, r.detail),
            r.tenant,
            r.event,
            &r.source,
            r.body.to_vec(),
            // 63 random bits: unique per refusal (across ingest instances too), so the
            // table's dedup key keeps every one.
            fastrand::i64(0..i64::MAX),
            runtime::now_ms(),
        );
        match avro::dead_letter().encode(&letter) {
            // Fire and forget: the answer to the sender does not wait for this.
            Ok(payload) => {
                let record = FutureRecord::to(topic).key(&r.source).payload(&payload);
                if let Err((e, _)) = producer.send_result(record) {
                    rejections.metrics.rejected_unrecorded();
                    tracing::warn!(error = %e, "Could not record a refused delivery");
                }
            }
            Err(e) => tracing::error!(error = %e, "Could not encode a refused delivery"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_everything_but_records_within_the_bound() {
        let metrics = Arc::new(Metrics::new());
        let rejections = Rejections::new(metrics.clone(), None, 2);
        for _ in 0..5 {
            rejections.refuse(Rejection {
                reason: "not_found",
                status: 404,
                detail: String::new(),
                tenant: "",
                event: "",
                source: "203.0.113.9".into(),
                body: b"",
            });
        }
        assert!(rejections.admit("forbidden").is_none());
        let text = metrics.render();
        assert!(
            text.contains(r#"ingest_rejected_total{reason="not_found"} 5"#),
            "{text}"
        );
        assert!(
            text.contains("ingest_rejected_unrecorded_total 4"),
            "{text}"
        );
    }
}
