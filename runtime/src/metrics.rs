//! Prometheus metrics plumbing: a `/metrics` endpoint for services without an HTTP API
//! of their own, and consumer lag read from librdkafka's statistics.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::{web, App, HttpResponse, HttpServer};
use prometheus::{Encoder, IntGauge, Registry, TextEncoder};
use rdkafka::consumer::ConsumerContext;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use tokio_util::sync::CancellationToken;

/// The registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("metrics encode");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// Serves `GET /metrics` (and `GET /healthz`) on `listen` until `shutdown`. Binding
/// happens now, so a bad address is an error at start.
pub fn serve(
    listen: &str,
    registry: Registry,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = std::net::TcpListener::bind(listen)?;
    let server = HttpServer::new(move || {
        let registry = registry.clone();
        App::new()
            .route(
                "/metrics",
                web::get().to(move || {
                    let body = render(&registry);
                    async move {
                        HttpResponse::Ok()
                            .content_type("text/plain; version=0.0.4")
                            .body(body)
                    }
                }),
            )
            .route("/healthz", web::get().to(|| async { "ok" }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        handle.stop(true).await;
    });
    Ok(tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "Metrics endpoint stopped");
        }
    }))
}

/// The metrics endpoint could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on METRICS_LISTEN={listen}: {error}")]
pub struct ServeError {
    pub listen: String,
    pub error: std::io::Error,
}

/// Serves `registry` on `listen` as [`serve`] does, unless `listen` is empty.
pub fn serve_configured(
    listen: &str,
    registry: &Registry,
    shutdown: &CancellationToken,
) -> Result<(), ServeError> {
    if listen.is_empty() {
        return Ok(());
    }
    serve(listen, registry.clone(), shutdown.clone()).map_err(|error| ServeError {
        listen: listen.to_owned(),
        error,
    })?;
    Ok(())
}

/// A consumer context that publishes the group's lag (records between the committed
/// offset and the end of each assigned partition, summed) to a gauge, from the
/// statistics librdkafka emits every `statistics.interval.ms`; and keeps, per topic,
/// how many records the broker holds beyond those handed to the application (see
/// [`LagContext::unread`]).
pub struct LagContext {
    lag: IntGauge,
    unread: Mutex<HashMap<String, i64>>,
}

impl LagContext {
    pub fn new(lag: IntGauge) -> LagContext {
        LagContext {
            lag,
            unread: Mutex::new(HashMap::new()),
        }
    }

    /// Records of `topic`'s assigned partitions the broker holds beyond those handed to
    /// the application, by the last statistics (so up to `statistics.interval.ms` old);
    /// `None` before the first statistics that tell.
    pub fn unread(&self, topic: &str) -> Option<i64> {
        self.unread.lock().expect("unread lock").get(topic).copied()
    }
}

/// Per topic, the records past each partition's application offset up to its high
/// watermark, summed, from `(topic, partition, high watermark, application offset)`
/// rows; partitions librdkafka does not know the offsets of (-1) are left out, and a
/// topic with none of them known is absent.
pub fn unread_by_topic<'a>(
    partitions: impl IntoIterator<Item = (&'a str, i32, i64, i64)>,
) -> HashMap<String, i64> {
    let mut unread = HashMap::new();
    for (topic, partition, high, app) in partitions {
        if partition >= 0 && high >= 0 && app >= 0 {
            *unread.entry(topic.to_owned()).or_insert(0) += (high - app).max(0);
        }
    }
    unread
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|topic| topic.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        self.lag.set(lag);
        let unread = unread_by_topic(statistics.topics.iter().flat_map(|(name, topic)| {
            topic
                .partitions
                .values()
                .map(move |p| (name.as_str(), p.partition, p.hi_offset, p.app_offset))
        }));
        *self.unread.lock().expect("unread lock") = unread;
    }
}

impl ConsumerContext for LagContext {}

/// Registers and returns a counter.
pub fn counter(registry: &Registry, name: &str, help: &str) -> prometheus::IntCounter {
    let counter = prometheus::IntCounter::new(name, help).expect("valid counter");
    registry
        .register(Box::new(counter.clone()))
        .expect("metric registered once");
    counter
}

/// Registers and returns a counter with labels.
pub fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::IntCounterVec {
    let counter = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)
        .expect("valid counter");
    registry
        .register(Box::new(counter.clone()))
        .expect("metric registered once");
    counter
}

/// Registers and returns a floating-point counter with labels (e.g. seconds spent).
pub fn float_counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::CounterVec {
    let counter = prometheus::CounterVec::new(prometheus::Opts::new(name, help), labels)
        .expect("valid counter");
    registry
        .register(Box::new(counter.clone()))
        .expect("metric registered once");
    counter
}

/// Registers and returns a gauge.
pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("valid gauge");
    registry
        .register(Box::new(gauge.clone()))
        .expect("metric registered once");
    gauge
}

/// Registers and returns a histogram with `buckets`.
pub fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> prometheus::Histogram {
    let histogram = prometheus::Histogram::with_opts(
        prometheus::HistogramOpts::new(name, help).buckets(buckets.to_vec()),
    )
    .expect("valid histogram");
    registry
        .register(Box::new(histogram.clone()))
        .expect("metric registered once");
    histogram
}

/// Buckets for durations from a millisecond to a minute.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets for counts per batch.
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 50000.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_records_are_summed_per_topic_over_the_partitions_whose_offsets_are_known() {
        let unread = unread_by_topic([
            ("normalized", 0, 1_500, 500),
            ("normalized", 1, 40, 40),
            // Not assigned here (no application offset), and librdkafka's internal one.
            ("normalized", 2, 9_000, -1001),
            ("normalized", -1, -1, -1),
            // An offset past the watermark it last heard of counts as nothing unread.
            ("dlq", 0, 10, 12),
            ("other", 0, -1, 5),
        ]);
        assert_eq!(
            unread,
            HashMap::from([("normalized".to_owned(), 1_000), ("dlq".to_owned(), 0)])
        );
    }
}
