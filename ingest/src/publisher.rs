//! Where accepted events go: a small trait so the HTTP layer can be tested without a
//! broker, the Kafka publisher (idempotent producer, `acks=all`), and the durable
//! publisher that falls back to the local spool when Kafka does not acknowledge in time.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use runtime::retry::Backoff;
use runtime::throttle::Throttle;
use runtime::KafkaArgs;
use tokio_util::sync::CancellationToken;

use crate::error::PublishError;
use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolError};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A raw record to make durable: its Kafka key, the encoded envelope, and the W3C
/// trace context of the request that brought it (sent as a Kafka header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub payload: Vec<u8>,
    pub traceparent: Option<String>,
}

/// Makes an event durable. `publish` resolves only once the event is stored.
pub trait Publisher: Send + Sync + 'static {
    fn publish(&self, record: Record) -> BoxFuture<'_, Result<(), PublishError>>;
    /// Whether the publisher can accept durably right now (for `/readyz`).
    fn ready(&self) -> BoxFuture<'_, bool>;
}

/// Publishes to a Kafka topic and waits for the acknowledgement of all in-sync replicas.
pub struct KafkaPublisher {
    producer: FutureProducer,
    topic: String,
    metrics: Arc<Metrics>,
}

impl KafkaPublisher {
    /// A producer whose every delivery either is acknowledged by all in-sync replicas or
    /// fails within `produce_timeout`. `message_max_bytes` bounds one record (librdkafka's
    /// `message.max.bytes`), `queue_max_bytes` what the client buffers in all.
    pub fn new(
        kafka: &KafkaArgs,
        topic: &str,
        produce_timeout: Duration,
        limits: (usize, usize),
        metrics: Arc<Metrics>,
    ) -> Result<KafkaPublisher, KafkaError> {
        let (message_max_bytes, queue_max_bytes) = limits;
        let mut config = kafka.reliable_config(produce_timeout);
        // Every request waits for its acknowledgement: do not hold records back to batch
        // them (concurrent requests still share batches).
        config
            .set("linger.ms", "0")
            .set("message.max.bytes", message_max_bytes.to_string())
            .set(
                "queue.buffering.max.kbytes",
                (queue_max_bytes / 1024).max(1).to_string(),
            );
        Ok(KafkaPublisher {
            producer: config.create()?,
            topic: topic.to_owned(),
            metrics,
        })
    }

    /// Waits until queued deliveries are done (on shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(Timeout::After(timeout)) {
            tracing::warn!(error = %e, "Producer flush did not complete");
        }
    }

    /// Produces `record` and waits for its acknowledgement. The record's payload is let
    /// go once the client has its copy; on failure the record comes back from that copy
    /// (`None` only if the client vanished with it).
    async fn send(&self, record: Record) -> Result<(), (PublishError, Option<Record>)> {
        let delivery = {
            let mut produced = FutureRecord::to(&self.topic)
                .key(&record.key)
                .payload(&record.payload);
            if let Some(headers) = runtime::trace::headers(record.traceparent.as_deref()) {
                produced = produced.headers(headers);
            }
            // A full local queue means we are over capacity: fail at once rather than
            // hold the request.
            match self.producer.send_result(produced) {
                Ok(delivery) => delivery,
                Err((e, _)) => return Err((classify(e), Some(record))),
            }
        };
        // Drop the payload now, not when this function returns (a field left behind in a
        // destructured value lives as long as the value would have).
        let Record {
            key,
            payload,
            traceparent,
        } = record;
        drop(payload);
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, message))) => {
                let payload = message.payload().unwrap_or_default().to_vec();
                let record = Record {
                    key,
                    payload,
                    traceparent,
                };
                Err((classify(e), Some(record)))
            }
            Err(_) => Err((
                PublishError::Unavailable("the Kafka client was stopped".into()),
                None,
            )),
        }
    }

    async fn reachable(&self) -> bool {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let check = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(2))
                .map(|m| {
                    // Ready only when every partition of the topic has a leader to write to.
                    m.topics().iter().any(|t| {
                        t.error().is_none()
                            && !t.partitions().is_empty()
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
                .unwrap_or(false)
        });
        check.await.unwrap_or(false)
    }
}

impl Publisher for KafkaPublisher {
    fn publish(&self, record: Record) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async move {
            let started = Instant::now();
            match self.send(record).await {
                Ok(()) => {
                    self.metrics.produced(started.elapsed());
                    Ok(())
                }
                Err((error, record)) => Err(error.with_record(record)),
            }
        })
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(self.reachable())
    }
}

/// Creates the raw topic when it is missing, and returns the largest record it takes
/// (`max.message.bytes`), when the broker says.
pub async fn check_raw_topic(
    kafka: &KafkaArgs,
    topic: runtime::Topic<'_>,
) -> Result<Option<usize>, runtime::TopicError> {
    kafka.create_missing_topics(&[topic]).await?;
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic.name())], &options)
        .await?;
    Ok(described
        .into_iter()
        .flatten()
        .flat_map(|resource| resource.entries)
        .find(|entry| entry.name == "max.message.bytes")
        .and_then(|entry| entry.value?.parse().ok()))
}

fn classify(e: KafkaError) -> PublishError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessage) => {
            PublishError::Refused {
                reason: e.to_string(),
                record: None,
            }
        }
        _ => PublishError::Unavailable(e.to_string()),
    }
}

/// `Some(held back since the last line)` when a throttled line may be logged now.
pub fn admit(throttle: &Mutex<Throttle>) -> Option<u64> {
    throttle
        .lock()
        .expect("throttle lock")
        .admit(Instant::now())
}

fn spool_error(e: SpoolError) -> PublishError {
    match e {
        SpoolError::Full { .. } => PublishError::Unavailable(e.to_string()),
        other => PublishError::Unavailable(format!("kafka unavailable and {other}")),
    }
}

/// Spooled entries moved to Kafka at once: at most this many, and no more bytes than
/// [`DRAIN_BATCH_BYTES`] (they are in memory twice while Kafka takes them).
const DRAIN_BATCH_ENTRIES: usize = 500;
pub const DRAIN_BATCH_BYTES: u64 = 8 << 20;

/// Kafka first; when Kafka does not acknowledge in time, the fsync'd local spool. While
/// the spool holds anything, new events go to the spool too, so that each key's events
/// reach Kafka in the order they were accepted.
pub struct DurablePublisher {
    kafka: Arc<KafkaPublisher>,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    /// While Kafka is down every delivery is spooled: one line per 10 s says so.
    spooling: Mutex<Throttle>,
}

impl DurablePublisher {
    pub fn new(
        kafka: Arc<KafkaPublisher>,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
    ) -> DurablePublisher {
        DurablePublisher {
            kafka,
            spool,
            metrics,
            spooling: Mutex::new(Throttle::new(Duration::from_secs(10))),
        }
    }

    /// Moves spooled entries to Kafka, oldest first, until `shutdown`; an entry leaves
    /// the spool only after Kafka acknowledged it.
    pub async fn drain(
        kafka: Arc<KafkaPublisher>,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut failures = 0;
        while !shutdown.is_cancelled() {
            metrics.spool(&spool);
            let entries = match spool.oldest(DRAIN_BATCH_ENTRIES, DRAIN_BATCH_BYTES).await {
                Ok(entries) if entries.is_empty() => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
                Ok(entries) => entries,
                Err(e) => {
                    tracing::error!(error = %e, "Reading the spool failed");
                    failures += 1;
                    RETRY.wait(failures, &shutdown).await;
                    continue;
                }
            };
            // Enqueue in order, then wait for every acknowledgement: the idempotent
            // producer keeps the order per partition.
            let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
            let sends: Vec<_> = entries.into_iter().map(|e| kafka.send(e.record)).collect();
            let results = futures::future::join_all(sends).await;
            let acked = results.iter().take_while(|r| r.is_ok()).count();
            if acked > 0 {
                if let Err(e) = spool.remove(seqs[..acked].to_vec()).await {
                    tracing::error!(error = %e, "Removing drained entries from the spool failed");
                }
                metrics.spool_drained(acked as u64);
            }
            if acked < seqs.len() {
                tracing::warn!(waiting = spool.events(), "Kafka unavailable; spool kept");
                failures += 1;
                if !RETRY.wait(failures, &shutdown).await {
                    break;
                }
            } else {
                failures = 0;
            }
        }
        metrics.spool(&spool);
    }
}

impl Publisher for DurablePublisher {
    fn publish(&self, record: Record) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async move {
            if self.spool.events() > 0 {
                return self.spool.append(record).await.map_err(spool_error);
            }
            let started = Instant::now();
            match self.kafka.send(record).await {
                Ok(()) => {
                    self.metrics.produced(started.elapsed());
                    Ok(())
                }
                Err((PublishError::Unavailable(reason), Some(record))) => {
                    if let Some(held_back) = admit(&self.spooling) {
                        tracing::warn!(%reason, held_back, "Kafka did not acknowledge; spooling");
                    }
                    self.spool.append(record).await.map_err(spool_error)
                }
                Err((error, record)) => Err(error.with_record(record)),
            }
        })
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.spool.has_room() || self.kafka.reachable().await })
    }
}

/// Writes to the spool only and never drains it: the cost of durability on local disk
/// (for the load benchmark).
pub struct SpoolOnlyPublisher(pub Arc<Spool>);

impl Publisher for SpoolOnlyPublisher {
    fn publish(&self, record: Record) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async move { self.0.append(record).await.map_err(spool_error) })
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.0.has_room() })
    }
}

/// Accepts and forgets: the HTTP ceiling (for the load benchmark only; not durable).
pub struct DiscardPublisher;

impl Publisher for DiscardPublisher {
    fn publish(&self, _record: Record) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async { Ok(()) })
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}
