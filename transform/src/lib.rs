//! The `transform` service: consumes raw deliveries (`webhooks.raw`), normalizes each with
//! the pure `normalize` crate, and publishes the result to `webhooks.normalized` under the
//! same key, so one entity's events stay in one partition, in order. What cannot be
//! processed also goes to `webhooks.dlq` with the reason.
//!
//! At least once: a message's offset is stored only after everything it produced is
//! acknowledged by Kafka. Duplicates this may cause are removed downstream by event id.

mod discovery;
pub mod erasures;
pub mod metrics;
mod replay;
mod route;

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use runtime::metrics::LagContext;
use runtime::{KafkaArgs, LogArgs, TopicArgs};
use schemas::Position;
use tokio_util::sync::CancellationToken;

pub use erasures::ErasureList;
pub use replay::{replay, BadPoint, Point, ReplayArgs, Report};
pub use route::{Output, Router};

/// Settings of the `transform` binary.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "transform",
    version,
    about = "Normalizes raw NectarDesk webhooks into typed Avro records."
)]
pub struct Config {
    /// Consumer group; every instance of the service shares it.
    #[arg(
        long,
        env = "TRANSFORM_GROUP_ID",
        default_value = "switchboard-transform",
        value_parser = runtime::kafka::group_id
    )]
    pub group_id: String,
    /// Most messages handled (and acknowledged) together.
    #[arg(long, env = "TRANSFORM_BATCH_MAX_MESSAGES", default_value_t = 500,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub batch_max_messages: usize,
    /// How long a produced record may wait for Kafka before the service gives up and
    /// exits (to be restarted and resume from its last stored offset).
    #[arg(long, env = "TRANSFORM_DELIVERY_TIMEOUT_MS", default_value_t = 300_000,
          value_parser = clap::value_parser!(u64).range(1000..))]
    pub delivery_timeout_ms: u64,
    /// Address of the Prometheus `/metrics` endpoint, `host:port`; empty: none.
    #[arg(long, env = "METRICS_LISTEN", default_value = "127.0.0.1:9101")]
    pub metrics_listen: String,
    /// The erasure list (compacted; written by `loader erase`): read whole before the
    /// first record is normalized, then followed.
    #[arg(long, env = "KAFKA_TOPIC_ERASURES", default_value = "webhooks.erasures",
          value_parser = runtime::kafka::topic)]
    pub erasures_topic: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of running the service.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Normalize webhooks.raw again (all of it or from a point in time) into
    /// webhooks.normalized, e.g. after a normalization fix; the running loader replaces
    /// the rows in place, without duplicates. Prints what it did.
    Replay(ReplayArgs),
}

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kafka client failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Topics(#[from] runtime::TopicError),
    #[error("kafka did not acknowledge a record for {topic}: {error}")]
    Delivery { topic: String, error: KafkaError },
    #[error(transparent)]
    Metrics(#[from] runtime::metrics::ServeError),
}

/// Runs until `shutdown` is cancelled or Kafka fails for longer than the delivery timeout.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let topics = &config.topics;
    config
        .kafka
        .create_missing_topics(&[topics.raw(), topics.normalized(), topics.dlq()])
        .await?;
    let metrics = metrics::Metrics::default();
    runtime::metrics::serve_configured(&config.metrics_listen, &metrics.registry, &shutdown)?;
    // Nothing is normalized before the whole erasure list is known.
    let Some(erasures) =
        ErasureList::follow(&config.kafka, &config.erasures_topic, &shutdown).await?
    else {
        return Ok(());
    };
    let mut router = Router::new(config.topics.clone(), erasures);
    let consumer = config
        .kafka
        .at_least_once_consumer(&config.group_id, metrics.lag.clone())?;
    let producer = config
        .kafka
        .reliable_producer(Duration::from_millis(config.delivery_timeout_ms))?;
    consumer.subscribe(&[&topics.raw_topic])?;
    tracing::info!(topic = %topics.raw_topic, group = %config.group_id, "Transform consuming");

    let result = consume(
        &config,
        &consumer,
        &producer,
        &mut router,
        &metrics,
        &shutdown,
    )
    .await;
    runtime::kafka::commit_on_exit(&consumer);
    result
}

async fn consume(
    config: &Config,
    consumer: &StreamConsumer<LagContext>,
    producer: &FutureProducer,
    router: &mut Router,
    metrics: &metrics::Metrics,
    shutdown: &CancellationToken,
) -> Result<(), RunError> {
    let mut errors = runtime::throttle::Throttle::new(Duration::from_secs(10));
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            message = consumer.recv() => message,
        };
        let mut batch = match first {
            Ok(message) => vec![message],
            Err(e) => {
                // Usually the broker is unreachable; librdkafka reconnects by itself.
                if let Some(held_back) = errors.admit(std::time::Instant::now()) {
                    tracing::warn!(error = %e, held_back, "Kafka consumer error");
                }
                continue;
            }
        };
        // Take what is already fetched, without waiting for more.
        while batch.len() < config.batch_max_messages {
            match tokio::time::timeout(Duration::from_millis(1), consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message),
                _ => break,
            }
        }

        let started = std::time::Instant::now();
        let mut deliveries = Vec::with_capacity(batch.len());
        let (mut normalized, mut dead_lettered) = (0, 0);
        for message in &batch {
            // Continues the webhook's trace from the header ingest set.
            let span = tracing::info_span!(
                "transform",
                partition = message.partition(),
                offset = message.offset()
            );
            runtime::trace::continue_trace(&span, runtime::trace::of_message(message).as_deref());
            let traceparent = runtime::trace::traceparent(&span);
            let outputs = span.in_scope(|| {
                router.route(
                    &position(message),
                    message.key(),
                    message.payload().unwrap_or_default(),
                    runtime::now_ms(),
                )
            });
            for output in outputs {
                if output.topic == config.topics.normalized_topic {
                    normalized += 1;
                } else {
                    dead_lettered += 1;
                }
                let delivery = enqueue(producer, &output, traceparent.as_deref()).await?;
                deliveries.push((output.topic.clone(), delivery));
            }
        }
        if !await_deliveries(deliveries, shutdown).await? {
            // Offsets of this batch are not stored: the next start redoes it.
            return Ok(());
        }
        metrics.batch(batch.len(), normalized, dead_lettered, started.elapsed());
        for message in &batch {
            // Fails only for a partition this instance no longer owns after a rebalance;
            // its new owner redoes the message, and the duplicate is removed downstream.
            if let Err(e) = consumer.store_offset_from_message(message) {
                tracing::warn!(error = %e, partition = message.partition(), "Offset not stored");
            }
        }
    }
}

/// Where a Kafka message was read from.
fn position(message: &impl Message) -> Position {
    Position {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
    }
}

/// Waits until Kafka acknowledged every delivery; `false` if `shutdown` came first.
async fn await_deliveries(
    deliveries: Vec<(String, rdkafka::producer::DeliveryFuture)>,
    shutdown: &CancellationToken,
) -> Result<bool, RunError> {
    for (topic, delivery) in deliveries {
        let acked = tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            acked = delivery => acked,
        };
        match acked {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => return Err(RunError::Delivery { topic, error }),
            Err(_canceled) => {
                return Err(RunError::Delivery {
                    topic,
                    error: KafkaError::Canceled,
                })
            }
        }
    }
    Ok(true)
}

/// Hands a record to the producer, waiting while its local queue is full; the returned
/// future resolves when Kafka acknowledges it. Records are enqueued in call order, and
/// the idempotent producer keeps that order per partition.
async fn enqueue(
    producer: &FutureProducer,
    output: &Output,
    traceparent: Option<&str>,
) -> Result<rdkafka::producer::DeliveryFuture, RunError> {
    loop {
        let mut record = FutureRecord::to(&output.topic)
            .key(&output.key)
            .payload(&output.payload);
        if let Some(headers) = runtime::trace::headers(traceparent) {
            record = record.headers(headers);
        }
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((error, _)) => {
                return Err(RunError::Delivery {
                    topic: output.topic.clone(),
                    error,
                })
            }
        }
    }
}
