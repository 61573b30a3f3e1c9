//! Refused deliveries: counted by reason, and recorded (metadata and a bounded prefix of
//! the body) in the dead-letter topic, where they reach the `dead_letters` table with stage
//! `ingest`. Recording is bounded per second so a flood of junk cannot flood Kafka; what
//! is over the bound is still counted.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{avro, DeadLetter};

use crate::metrics::Metrics;

/// How much of a refused body is kept.
pub const BODY_PREFIX_BYTES: usize = 1024;

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

    pub fn record(&self, r: Rejection<'_>) {
        self.metrics.rejected(r.reason);
        if !self.within_bound() {
            self.metrics.rejected_unrecorded();
            return;
        }
        tracing::warn!(reason = r.reason, status = r.status, tenant = r.tenant, event = r.event, source = %r.source, detail = %r.detail, "Delivery refused");
        let Some((producer, topic)) = &self.sink else {
            return;
        };
        let letter = DeadLetter::refused_delivery(
            r.status,
            format!("{} {}: {}", r.status, r.reason, r.detail),
            r.tenant,
            r.event,
            &r.source,
            r.body[..r.body.len().min(BODY_PREFIX_BYTES)].to_vec(),
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
                    tracing::warn!(error = %e, "Could not record a refused delivery");
                }
            }
            Err(e) => tracing::error!(error = %e, "Could not encode a refused delivery"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_everything_but_records_within_the_bound() {
        let metrics = Arc::new(Metrics::new());
        let rejections = Rejections::new(metrics.clone(), None, 2);
        for _ in 0..5 {
            rejections.record(Rejection {
                reason: "not_found",
                status: 404,
                detail: String::new(),
                tenant: "",
                event: "",
                source: "203.0.113.9".into(),
                body: b"",
            });
        }
        let text = metrics.render();
        assert!(
            text.contains(r#"ingest_rejected_total{reason="not_found"} 5"#),
            "{text}"
        );
        assert!(
            text.contains("ingest_rejected_unrecorded_total 3"),
            "{text}"
        );
    }
}
