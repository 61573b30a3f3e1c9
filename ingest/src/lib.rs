//! `ingest`: the HTTP receiver for NectarDesk webhooks.
//!
//! It does as little as it can: check the source and the token, read the body, and write
//! the delivery unchanged to Kafka (`webhooks.raw`), keyed so one call's events stay in
//! order. Every body within the limit is kept, JSON or not (the normalizer marks what it
//! cannot read `invalid`). It answers 200 only once the delivery is durable (acknowledged by Kafka,
//! or fsync'd to the local spool when Kafka is slow or down), and 503 (never a 4xx) for
//! anything a retry could fix, because the sender never retries a 4xx.
//! Normalization is not done here; see the `normalize` crate.

pub mod access;
pub mod body;
pub mod budget;
pub mod config;
pub mod delivery;
pub mod error;
pub mod guard;
pub mod metrics;
pub mod publisher;
pub mod rejections;
pub mod routes;
pub mod server;
pub mod spool;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use config::Config;
use config::Sink;
use metrics::Metrics;
use publisher::{
    DiscardPublisher, DurablePublisher, KafkaPublisher, Publisher, SpoolOnlyPublisher,
};
use rejections::Rejections;
use routes::State;
use spool::{Spool, SpoolError};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kafka client could not be created: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Topics(#[from] runtime::TopicError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("http server failed: {0}")]
    Http(#[from] std::io::Error),
    #[error("topic {topic} takes records of at most {topic_max} bytes (max.message.bytes), less than the {needed} a body of INGEST_MAX_BODY_BYTES makes: raise the topic's limit or lower INGEST_MAX_BODY_BYTES")]
    TopicTooSmall {
        topic: String,
        topic_max: usize,
        needed: usize,
    },
}

/// Runs `ingest` on `listener` until `shutdown` is cancelled, then answers 503 to new
/// deliveries, finishes those in flight, and flushes the producer. The spool keeps what
/// Kafka has not acknowledged; the next start drains it.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let produce_timeout = Duration::from_millis(config.http.produce_timeout_ms);
    let largest = config.http.largest_record_bytes();
    let spool = match &config.spool.spool_dir {
        Some(dir) => {
            let max_bytes = config.spool.spool_max_bytes;
            Some(Arc::new(Spool::open(dir, max_bytes, largest as u64)?))
        }
        None => None,
    };
    let draining = CancellationToken::new();
    let mut kafka_publisher = None;
    let publisher: Arc<dyn Publisher> = match (config.spool.sink, &spool) {
        (Sink::Discard, _) => Arc::new(DiscardPublisher),
        (Sink::Spool, Some(spool)) => Arc::new(SpoolOnlyPublisher(spool.clone())),
        (_, spool) => {
            // Never wait for Kafka to start: the spool (or a 503) covers its absence.
            let raw_topic = config.topics.raw();
            let check = publisher::check_raw_topic(&config.kafka, raw_topic);
            match tokio::time::timeout(Duration::from_secs(5), check).await {
                Ok(Ok(Some(topic_max))) if topic_max < largest => {
                    return Err(RunError::TopicTooSmall {
                        topic: raw_topic.name().to_owned(),
                        topic_max,
                        needed: largest,
                    });
                }
                Ok(Ok(_)) => {}
                // A setting that cannot work (too few brokers for the replication
                // factor): waiting cannot fix it, so stop with its message.
                Ok(Err(e)) if e.is_setting() => return Err(e.into()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Could not check the raw topic; continuing")
                }
                Err(_) => tracing::warn!("Kafka did not answer within 5 s; continuing"),
            }
            let kafka = Arc::new(KafkaPublisher::new(
                &config.kafka,
                raw_topic.name(),
                produce_timeout,
                (
                    config.http.kafka_message_max_bytes,
                    config.http.body_memory_bytes(),
                ),
                metrics.clone(),
            )?);
            kafka_publisher = Some(kafka.clone());
            match spool {
                Some(spool) => {
                    if spool.events() > 0 {
                        tracing::info!(events = spool.events(), "Replaying the spool");
                    }
                    tokio::spawn(DurablePublisher::drain(
                        kafka.clone(),
                        spool.clone(),
                        metrics.clone(),
                        draining.clone(),
                    ));
                    Arc::new(DurablePublisher::new(kafka, spool.clone(), metrics.clone()))
                }
                None => kafka,
            }
        }
    };
    let dlq = match config.spool.sink {
        Sink::Kafka => {
            let mut producer = config.kafka.reliable_config(Duration::from_secs(30));
            producer
                .set(
                    "message.max.bytes",
                    config.http.kafka_message_max_bytes.to_string(),
                )
                .set(
                    "queue.buffering.max.kbytes",
                    (rejections::DLQ_BUFFER_BYTES / 1024).to_string(),
                );
            Some((producer.create()?, config.topics.dlq_topic.clone()))
        }
        _ => None,
    };
    let state = State {
        rejections: Arc::new(Rejections::new(
            metrics.clone(),
            dlq,
            config.access.record_rejections_per_s,
        )),
        metrics,
        access: config.access.access(),
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.http.max_in_flight)),
        budget: config.http.budget(),
        not_stored: State::log_throttle(),
        tokens: config.tokens.clone(),
        http: config.http.clone(),
        publisher,
        shutdown: shutdown.clone(),
    };
    tracing::info!(tenants = ?config.tokens.tenants(), sink = %config.spool.sink, spool = ?config.spool.spool_dir, "Ingest configured");
    server::serve(state, listener).await?;
    draining.cancel();
    if let Some(kafka) = kafka_publisher {
        tokio::task::spawn_blocking(move || kafka.flush(Duration::from_secs(10)))
            .await
            .ok();
    }
    Ok(())
}
