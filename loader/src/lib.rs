//! `loader`: consumes normalized records (`webhooks.normalized`) and dead letters
//! (`webhooks.dlq`) and writes them to ClickHouse in batches.
//!
//! At least once, with an exactly-once effect for readers: a batch covers one offset
//! range of one partition, its offset is stored only after ClickHouse accepted its rows,
//! and a batch written twice (after a crash or a rebalance) is collapsed by event id in
//! the views analysts query. Servers with insert deduplication tokens (22.2+) also drop
//! the repeated insert itself: each block's range is recorded in `loader_blocks` before
//! it is written, and cut the same way after a restart. Rows ClickHouse refuses for
//! their values are isolated and dead-lettered; the rest of the batch goes in. The
//! loader creates the database and applies pending migrations at start.
//!
//! The parts: [`consume`] reads Kafka into per-partition batches and stores offsets,
//! [`write`] writes one batch (retries, refused rows, the DLQ), [`sink`] is ClickHouse
//! (connection, migrations, what the server supports, inserts).

mod admin;
pub mod batch;
pub mod block;
pub mod config;
pub mod consume;
pub mod erase;
pub mod known;
pub mod metrics;
pub mod retention;
pub mod sink;
pub mod write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use runtime::retry::Backoff;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use sink::{Schema, Sink, SinkError};

/// Why the loader stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    ClickHouse(#[from] SinkError),
    #[error("kafka client failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Topics(#[from] runtime::TopicError),
    #[error(transparent)]
    Metrics(#[from] runtime::metrics::ServeError),
    #[error(transparent)]
    Erase(#[from] erase::EraseError),
    /// Mutations and state rebuilds would have to run ON CLUSTER on the local tables.
    #[error("loader {0} does not run in a cluster (CLICKHOUSE_CLUSTER) yet: see README, \"{1}\"")]
    NotInCluster(&'static str, &'static str),
}

/// How long the loader keeps trying to reach ClickHouse at start before giving up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// Retries of a failed ClickHouse operation: from 100 ms to 30 s.
pub(crate) const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    // On one server the loader migrates at start; in a cluster only `loader migrate` does.
    let schema = if config.clickhouse.cluster.is_empty() {
        Schema::Migrate
    } else {
        Schema::Check
    };
    let Some(sink) = connect(&config, schema, &shutdown).await? else {
        return Ok(());
    };
    let retention = config.retention.settings();
    if sink.cluster().is_some() {
        if retention != Default::default() {
            tracing::warn!(
                "RETENTION_* settings are not applied in a cluster yet (README, Retention)"
            );
        }
    } else if sink.ttl {
        retention::apply_ttls(&sink, retention).await?;
    } else if retention != Default::default() {
        tracing::warn!(
            "This ClickHouse has no TTL: RETENTION_* settings are applied only by `loader retention --apply`; run it daily"
        );
    }
    let topics = &config.topics;
    config
        .kafka
        .create_missing_topics(&[topics.normalized(), topics.dlq()])
        .await?;
    let metrics = metrics::Metrics::default();
    runtime::metrics::serve_configured(&config.metrics_listen, &metrics.registry, &shutdown)?;
    let consumer = config
        .kafka
        .at_least_once_consumer(&config.group_id, metrics.lag.clone())?;
    let dlq = config.kafka.reliable_producer(Duration::from_secs(60))?;
    consumer.subscribe(&[&topics.normalized_topic, &topics.dlq_topic])?;
    tracing::info!(
        topics = %format!("{},{}", topics.normalized_topic, topics.dlq_topic),
        group = %config.group_id,
        "Loader consuming"
    );
    let writer = Arc::new(write::Writer::new(
        sink,
        dlq,
        topics.dlq_topic.clone(),
        config.group_id.clone(),
        metrics,
        &config.dedup,
    ));
    let result = consume::Consume::new(&config, &consumer, writer)
        .run(&shutdown)
        .await;
    runtime::kafka::commit_on_exit(&consumer);
    result
}

/// `loader migrate`: creates the database and applies pending migrations, then returns
/// the schema version.
pub async fn migrate(config: &Config, shutdown: &CancellationToken) -> Result<u32, RunError> {
    match connect(config, Schema::Migrate, shutdown).await? {
        Some(sink) => Ok(sink.schema_version()),
        None => Ok(0),
    }
}

/// Connects to ClickHouse, retrying while it is starting up; `None` on shutdown.
pub(crate) async fn connect(
    config: &Config,
    schema: Schema,
    shutdown: &CancellationToken,
) -> Result<Option<Sink>, RunError> {
    let deadline = Instant::now() + CONNECT_PATIENCE;
    let mut attempt = 0;
    loop {
        match Sink::connect(&config.clickhouse, config.block_log, schema).await {
            Ok(sink) => return Ok(Some(sink)),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "ClickHouse not reachable yet; retrying");
                if !RETRY.wait(attempt, shutdown).await {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
