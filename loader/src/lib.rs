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

pub mod batch;
pub mod config;
pub mod metrics;
pub mod rows;
pub mod sink;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use runtime::metrics::LagContext;
use schemas::{avro, DeadLetter};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use batch::{Batch, FlushPolicy, FlushReason};
pub use config::Config;
use sink::{Rejected, Sink, SinkError};

/// Why the loader stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    ClickHouse(#[from] SinkError),
    #[error("kafka client failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Metrics(#[from] runtime::metrics::ServeError),
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

    let mut loader = Loader {
        config: &config,
        consumer: &consumer,
        writer: Arc::new(Writer {
            sink,
            dlq,
            dlq_topic: topics.dlq_topic.clone(),
            group: config.group_id.clone(),
            metrics,
        }),
        policy: config.batch.policy(),
        batches: BTreeMap::new(),
        in_flight: BTreeMap::new(),
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
        match Sink::connect(&config.clickhouse, config.block_log).await {
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
    consumer: &'a StreamConsumer<LagContext>,
    writer: Arc<Writer>,
    policy: FlushPolicy,
    /// One pending batch per (topic, partition).
    batches: BTreeMap<(String, i32), Batch>,
    /// Batches being written, at most one per partition: consuming goes on meanwhile,
    /// memory stays bounded, and each partition's offsets are stored in order.
    in_flight: BTreeMap<(String, i32), WriteTask>,
}

type WriteTask = tokio::task::JoinHandle<Result<Option<i64>, RunError>>;

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
            let finished: Vec<_> = self
                .in_flight
                .iter()
                .filter(|(_, task)| task.is_finished())
                .map(|(key, _)| key.clone())
                .collect();
            for key in finished {
                self.finish_write(&key).await?;
            }
            let now = Instant::now();
            let due: Vec<_> = self
                .batches
                .iter()
                .filter_map(|(key, batch)| Some((key.clone(), self.policy.due(batch, now)?)))
                .collect();
            for (key, reason) in due {
                self.finish_write(&key).await?;
                self.start_write(&key, reason, shutdown);
            }
        }
        // What is being written gets a bounded grace; what is pending gets one bounded
        // attempt. What is not written is redone by the next start, since its offsets
        // were never stored.
        let grace = CancellationToken::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            let writing: Vec<_> = self.in_flight.keys().cloned().collect();
            for key in writing {
                self.finish_write(&key).await?;
            }
            let pending: Vec<_> = self.batches.keys().cloned().collect();
            for key in pending {
                self.start_write(&key, FlushReason::Shutdown, &grace);
                self.finish_write(&key).await?;
            }
            Ok::<_, RunError>(())
        })
        .await;
        grace.cancel();
        Ok(())
    }

    /// Adds a message to its partition's batch. An undecodable normalized record is
    /// dead-lettered instead; an undecodable dead letter is kept in `dead_letters` as it
    /// was read (a second dead-lettering would only loop).
    async fn add(&mut self, message: &BorrowedMessage<'_>) -> Result<(), RunError> {
        let payload = message.payload().unwrap_or_default();
        let (topic, partition, offset, now) = (
            message.topic(),
            message.partition(),
            message.offset(),
            Instant::now(),
        );
        let key = (topic.to_owned(), partition);
        if self.batches.get(&key).is_none_or(Batch::is_empty) {
            let planned_last = self.planned_last(topic, partition, offset).await;
            self.batches.insert(
                key.clone(),
                Batch {
                    planned_last,
                    ..Batch::default()
                },
            );
        }
        // Continues the webhook's trace (from the header transform set) until the
        // insert; a record that carries no trace costs no span.
        if let Some(traceparent) = runtime::trace::of_message(message) {
            let span =
                tracing::info_span!("load", partition, offset, block = tracing::field::Empty);
            runtime::trace::continue_trace(&span, Some(&traceparent));
            self.batch(&key).spans.push(span);
        }
        if topic == self.config.topics.dlq_topic {
            let letter = avro::dead_letter()
                .decode(payload)
                .unwrap_or_else(|e| letter(message, format!("undecodable dead letter: {e}")));
            self.batch(&key).add_dead_letter(letter, offset, now);
            return Ok(());
        }
        match avro::normalized_event().decode(payload) {
            Ok(event) => self.batch(&key).add_event(event, offset, now),
            Err(e) => {
                let reason = format!("undecodable normalized record: {e}");
                tracing::warn!(%reason, partition, offset, "Dead-lettering a record");
                self.writer
                    .send_dead_letter(message.key().unwrap_or_default(), &letter(message, reason))
                    .await?;
                self.writer.metrics.dead_lettered("undecodable", 1);
                self.batch(&key).skip(offset, now);
            }
        }
        Ok(())
    }

    fn batch(&mut self, key: &(String, i32)) -> &mut Batch {
        self.batches.entry(key.clone()).or_default()
    }

    /// Where a batch starting at `first_offset` must end to repeat a block recorded
    /// before a restart. Without an answer the batch is cut as usual: its rows may then
    /// be stored twice, and the views still show them once.
    async fn planned_last(&self, topic: &str, partition: i32, first_offset: i64) -> Option<i64> {
        let sink = &self.writer.sink;
        if !sink.block_log {
            return None;
        }
        let group = &self.config.group_id;
        match sink
            .planned_last(group, topic, partition, first_offset)
            .await
        {
            Ok(planned) => {
                if let Some(last) = planned {
                    tracing::info!(
                        topic,
                        partition,
                        first_offset,
                        last,
                        "Redoing a recorded block"
                    );
                }
                planned
            }
            Err(e) => {
                tracing::warn!(error = %e, topic, partition, "Recorded blocks not readable; cutting a new block");
                None
            }
        }
    }

    /// Takes a partition's batch out and starts writing it in a task of its own.
    fn start_write(
        &mut self,
        key: &(String, i32),
        reason: FlushReason,
        shutdown: &CancellationToken,
    ) {
        let Some(batch) = self.batches.remove(key).filter(|b| !b.is_empty()) else {
            return;
        };
        let writer = self.writer.clone();
        let (key_owned, shutdown) = (key.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            writer
                .write_block(&key_owned, batch, reason, &shutdown)
                .await
        });
        self.in_flight.insert(key.clone(), task);
    }

    /// Waits for the partition's write in flight, if any, then stores the offset after
    /// its block.
    async fn finish_write(&mut self, key: &(String, i32)) -> Result<(), RunError> {
        let Some(task) = self.in_flight.remove(key) else {
            return Ok(());
        };
        let written = task.await.expect("the write task does not panic")?;
        if let Some(last) = written {
            self.store_offset(&key.0, key.1, last);
        }
        Ok(())
    }

    fn store_offset(&self, topic: &str, partition: i32, last: i64) {
        let mut list = TopicPartitionList::new();
        // The committed offset is the next one to read.
        if let Err(e) = list.add_partition_offset(topic, partition, Offset::Offset(last + 1)) {
            tracing::warn!(error = %e, topic, partition, "Offset not stored");
            return;
        }
        // Fails only for a partition revoked by a rebalance; its new owner redoes the
        // records, and the views collapse the duplicates.
        if let Err(e) = self.consumer.store_offsets(&list) {
            tracing::warn!(error = %e, "Offsets not stored");
        }
    }
}

/// What writing a block needs, shared with the task that writes it.
struct Writer {
    sink: Sink,
    dlq: FutureProducer,
    dlq_topic: String,
    group: String,
    metrics: metrics::Metrics,
}

impl Writer {
    /// Writes one partition's batch, retrying with backoff until ClickHouse accepts it
    /// or `shutdown` is cancelled (then `None`: not written, offsets not to be stored);
    /// sends the rows it refused for their values to the DLQ. Returns the last offset.
    async fn write_block(
        &self,
        key: &(String, i32),
        batch: Batch,
        reason: FlushReason,
        shutdown: &CancellationToken,
    ) -> Result<Option<i64>, RunError> {
        let (topic, partition) = (key.0.as_str(), key.1);
        let (first, last) = (batch.first_offset, batch.last_offset);
        let group = &self.group;
        let block = format!("{group}:{topic}:{partition}:{first}-{last}");
        let started = Instant::now();
        let mut attempt = 0;
        let insert_span =
            tracing::info_span!("clickhouse_insert", block = %block, events = batch.events);
        let rejected = loop {
            let result = async {
                if self.sink.block_log && batch.planned_last != Some(last) {
                    self.sink
                        .record_block(group, topic, partition, first, last)
                        .await?;
                }
                self.sink.write(&batch, &block).await
            }
            .instrument(insert_span.clone())
            .await;
            let e = match result {
                Ok(rejected) => break rejected,
                Err(e) => e,
            };
            attempt += 1;
            self.metrics.insert_retries.inc();
            if e.is_retryable() {
                tracing::warn!(error = %e, attempt, "ClickHouse insert failed; retrying");
            } else {
                // Not the values but the statement: a table changed by hand or a
                // migration missing. Keep the offsets and retry, loudly.
                tracing::error!(error = %e, attempt, "ClickHouse rejected the insert; retrying");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(backoff(attempt)) => {}
            }
        };
        for refused in &rejected {
            self.set_aside(topic, partition, &batch, refused).await?;
        }
        tracing::debug!(
            topic,
            partition,
            first,
            last,
            events = batch.events,
            refused = rejected.len(),
            reason = reason.as_str(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Batch written"
        );
        let source = if topic == self.dlq_topic {
            "dlq"
        } else {
            "normalized"
        };
        self.metrics.batch(
            source,
            &batch,
            reason,
            rejected.len(),
            started.elapsed(),
            runtime::now_ms(),
        );
        for span in &batch.spans {
            span.record("block", block.as_str());
        }
        // Dropping the batch closes its spans: each event's trace ends at its insert.
        drop(batch);
        Ok(Some(last))
    }

    /// Sends a row ClickHouse refused to the DLQ (from where it lands in
    /// `dead_letters`). A refused dead letter is only logged: sending it back would loop.
    async fn set_aside(
        &self,
        topic: &str,
        partition: i32,
        batch: &Batch,
        refused: &Rejected,
    ) -> Result<(), RunError> {
        let offset = batch.offset_of(&refused.event_id).unwrap_or(-1);
        tracing::warn!(
            table = refused.table,
            event_id = %refused.event_id,
            partition,
            offset,
            error = %refused.error,
            "ClickHouse refused a row; dead-lettering it"
        );
        if refused.table == "dead_letters_store" {
            tracing::error!(row = %refused.row, "A dead letter was refused by ClickHouse; it stays only in the DLQ topic");
            return Ok(());
        }
        let letter = DeadLetter {
            stage: "loader".to_owned(),
            reason: format!(
                "ClickHouse refused the {} row: {}",
                refused.table, refused.error
            ),
            event_id: refused.event_id.clone(),
            tenant: refused.tenant.clone(),
            event: String::new(),
            source_topic: topic.to_owned(),
            source_partition: partition,
            source_offset: offset,
            key: String::new(),
            payload: refused.row.clone().into_bytes(),
            failed_at: runtime::now_ms(),
        };
        self.send_dead_letter(refused.event_id.as_bytes(), &letter)
            .await
    }

    async fn send_dead_letter(&self, key: &[u8], letter: &DeadLetter) -> Result<(), RunError> {
        let payload = avro::dead_letter()
            .encode(letter)
            .expect("a dead letter has only strings, numbers and bytes, which always encode");
        let record = FutureRecord::to(&self.dlq_topic).key(key).payload(&payload);
        self.dlq
            .send(record, Duration::from_secs(60))
            .await
            .map_err(|(e, _)| RunError::Kafka(e))?;
        Ok(())
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
