//! `loader`: consumes normalized records (`webhooks.normalized`) and dead letters
//! (`webhooks.dlq`) and writes them to ClickHouse in batches.
//!
//! At least once, with an idempotent effect: a batch's offsets are stored only after
//! ClickHouse accepted all of its rows, and a batch written twice (after a crash or a
//! rebalance) is collapsed by event id in the views analysts query. The loader creates
//! the database and applies pending migrations at start.

pub mod batch;
pub mod config;
pub mod rows;
pub mod sink;

use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use schemas::{avro, DeadLetter};
use tokio_util::sync::CancellationToken;

use batch::{Batch, FlushPolicy, FlushReason};
pub use config::Config;
use sink::{Sink, SinkError};

/// Why the loader stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    ClickHouse(#[from] SinkError),
    #[error("kafka client failed: {0}")]
    Kafka(#[from] KafkaError),
}

/// How long the loader keeps trying to reach ClickHouse at start before giving up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let Some(sink) = connect(&config, &shutdown).await? else {
        return Ok(());
    };
    let topics = &config.topics;
    config
        .kafka
        .ensure_topics(&[&topics.normalized_topic, &topics.dlq_topic])
        .await?;
    let consumer = config.kafka.at_least_once_consumer(&config.group_id)?;
    let dlq = config.kafka.reliable_producer(Duration::from_secs(60))?;
    consumer.subscribe(&[&topics.normalized_topic, &topics.dlq_topic])?;
    tracing::info!(
        topics = %format!("{},{}", topics.normalized_topic, topics.dlq_topic),
        group = %config.group_id,
        "Loader consuming"
    );

    let mut loader = Loader {
        config: &config,
        sink,
        consumer: &consumer,
        dlq,
        policy: config.batch.policy(),
        batch: Batch::default(),
    };
    let result = loader.consume(&shutdown).await;
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
            tracing::warn!(error = %e, "Final offset commit failed");
        }
    }
    result
}

/// Connects to ClickHouse, retrying while it is starting up; `None` on shutdown.
async fn connect(config: &Config, shutdown: &CancellationToken) -> Result<Option<Sink>, RunError> {
    let deadline = Instant::now() + CONNECT_PATIENCE;
    let mut attempt = 0;
    loop {
        match Sink::connect(&config.clickhouse).await {
            Ok(sink) => return Ok(Some(sink)),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "ClickHouse not reachable yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(backoff(attempt)) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

struct Loader<'a> {
    config: &'a Config,
    sink: Sink,
    consumer: &'a StreamConsumer,
    dlq: FutureProducer,
    policy: FlushPolicy,
    batch: Batch,
}

impl Loader<'_> {
    async fn consume(&mut self, shutdown: &CancellationToken) -> Result<(), RunError> {
        let mut errors = runtime::throttle::Throttle::new(Duration::from_secs(10));
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                message = self.consumer.recv() => match message {
                    Ok(message) => self.add(&message).await?,
                    Err(e) => {
                        // Usually the broker is unreachable; librdkafka reconnects by itself.
                        if let Some(held_back) = errors.admit(Instant::now()) {
                            tracing::warn!(error = %e, held_back, "Kafka consumer error");
                        }
                    }
                },
                _ = tick.tick() => {}
            }
            if let Some(reason) = self.policy.due(&self.batch, Instant::now()) {
                self.flush(reason, shutdown).await?;
            }
        }
        if !self.batch.is_empty() {
            // One bounded attempt set on the way out; what is not written is redone by
            // the next start, since its offsets were never stored.
            let grace = CancellationToken::new();
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                self.flush(FlushReason::Shutdown, &grace),
            )
            .await;
        }
        Ok(())
    }

    /// Adds a message to the batch. An undecodable normalized record is dead-lettered
    /// instead; an undecodable dead letter is kept in `dead_letters` as it was read (a
    /// second dead-lettering would only loop).
    async fn add(&mut self, message: &BorrowedMessage<'_>) -> Result<(), RunError> {
        let payload = message.payload().unwrap_or_default();
        let (topic, partition, offset, now) = (
            message.topic(),
            message.partition(),
            message.offset(),
            Instant::now(),
        );
        if topic == self.config.topics.dlq_topic {
            let letter = avro::dead_letter()
                .decode(payload)
                .unwrap_or_else(|e| letter(message, format!("undecodable dead letter: {e}")));
            self.batch
                .add_dead_letter(letter, topic, partition, offset, now);
            return Ok(());
        }
        match avro::normalized_event().decode(payload) {
            Ok(event) => self.batch.add_event(event, topic, partition, offset, now),
            Err(e) => {
                self.dead_letter(message, format!("undecodable normalized record: {e}"))
                    .await?;
                self.batch.skip(topic, partition, offset, now);
            }
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        reason: String,
    ) -> Result<(), RunError> {
        tracing::warn!(%reason, partition = message.partition(), offset = message.offset(), "Dead-lettering a record");
        let payload = avro::dead_letter()
            .encode(&letter(message, reason))
            .expect("a dead letter has only strings, numbers and bytes, which always encode");
        let key = message.key().unwrap_or_default();
        let record = FutureRecord::to(&self.config.topics.dlq_topic)
            .key(key)
            .payload(&payload);
        self.dlq
            .send(record, Duration::from_secs(60))
            .await
            .map_err(|(e, _)| RunError::Kafka(e))?;
        Ok(())
    }

    /// Writes the batch, retrying with backoff until ClickHouse accepts it or `shutdown`
    /// is cancelled, then stores its offsets.
    async fn flush(
        &mut self,
        reason: FlushReason,
        shutdown: &CancellationToken,
    ) -> Result<(), RunError> {
        let started = Instant::now();
        let mut attempt = 0;
        while let Err(e) = self.sink.write(&self.batch).await {
            attempt += 1;
            if e.is_retryable() {
                tracing::warn!(error = %e, attempt, "ClickHouse insert failed; retrying");
            } else {
                // Rows are typed and the schema is ours, so this is a deployment problem
                // (e.g. a table changed by hand): keep the offsets and retry, loudly.
                tracing::error!(error = %e, attempt, "ClickHouse rejected the batch; retrying");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff(attempt)) => {}
            }
        }
        let batch = std::mem::take(&mut self.batch);
        self.store_offsets(&batch);
        tracing::debug!(
            events = batch.events,
            raw_rows = batch.tables.raw.len(),
            reason = reason.as_str(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Batch written"
        );
        Ok(())
    }

    fn store_offsets(&self, batch: &Batch) {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in &batch.offsets {
            // The committed offset is the next one to read.
            if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(offset + 1))
            {
                tracing::warn!(error = %e, topic, partition, "Offset not stored");
            }
        }
        // Fails only for partitions revoked by a rebalance; their new owner redoes the
        // records, and the views collapse the duplicates.
        if let Err(e) = self.consumer.store_offsets(&list) {
            tracing::warn!(error = %e, "Offsets not stored");
        }
    }
}

/// A dead letter of the loader for a message it could not decode.
fn letter(message: &BorrowedMessage<'_>, reason: String) -> DeadLetter {
    DeadLetter {
        stage: "loader".to_owned(),
        reason,
        event_id: String::new(),
        tenant: String::new(),
        event: String::new(),
        source_topic: message.topic().to_owned(),
        source_partition: message.partition(),
        source_offset: message.offset(),
        key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
        payload: message.payload().unwrap_or_default().to_vec(),
        failed_at: runtime::now_ms(),
    }
}

/// Exponential backoff from 100 ms to 30 s, with ±50% jitter so that several loaders do
/// not retry in step.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(9)).min(30_000);
    Duration::from_millis(base / 2 + fastrand::u64(0..=base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(
                (Duration::from_millis(100)..=Duration::from_millis(300)).contains(&first),
                "{first:?}"
            );
            let late = backoff(30);
            assert!(
                (Duration::from_secs(15)..=Duration::from_secs(45)).contains(&late),
                "{late:?}"
            );
        }
    }
}
