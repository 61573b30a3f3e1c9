//! Kafka in: one batch per partition, cut into blocks by the flush policy, each block
//! written by a task of its own (at most one per partition, so a partition's offsets are
//! stored in order), and its offset stored once the block is written.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use runtime::metrics::LagContext;
use schemas::{avro, DeadLetter, Position, Stage};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, FlushPolicy, FlushReason};
use crate::block;
use crate::write::Writer;
use crate::{Config, RunError};

/// A partition of a consumed topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.topic, self.partition)
    }
}

/// The last offset of a written block, or `None` when it was not written (shutdown).
type Written = (TopicPartition, Result<Option<i64>, RunError>);

/// How long writes in flight and pending batches may take once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The consuming side of the loader.
pub struct Consume<'a> {
    config: &'a Config,
    consumer: &'a StreamConsumer<LagContext>,
    writer: Arc<Writer>,
    policy: FlushPolicy,
    /// One pending batch per partition.
    batches: BTreeMap<TopicPartition, Batch>,
    /// Partitions with a block being written.
    writing: BTreeSet<TopicPartition>,
    /// The newest epoch seen per partition (see `block`).
    epochs: BTreeMap<TopicPartition, u32>,
    writes: JoinSet<Written>,
}

impl<'a> Consume<'a> {
    pub fn new(
        config: &'a Config,
        consumer: &'a StreamConsumer<LagContext>,
        writer: Arc<Writer>,
    ) -> Consume<'a> {
        Consume {
            config,
            consumer,
            writer,
            policy: config.batch.policy(),
            batches: BTreeMap::new(),
            writing: BTreeSet::new(),
            epochs: BTreeMap::new(),
            writes: JoinSet::new(),
        }
    }

    /// Consumes until `shutdown`, then finishes what it can within a grace period. What
    /// is not written is redone by the next start, since its offsets were never stored.
    pub async fn run(mut self, shutdown: &CancellationToken) -> Result<(), RunError> {
        let mut errors = runtime::throttle::Throttle::new(Duration::from_secs(10));
        loop {
            let blocked = self.start_due_writes(Instant::now(), shutdown);
            let next_due = self.next_deadline();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(written) = self.writes.join_next() => self.finished(written)?,
                // A due batch waits for its partition's write in flight: consuming waits
                // too, so memory stays bounded while ClickHouse is slow or down.
                message = self.consumer.recv(), if !blocked => match message {
                    Ok(message) => self.add(&message).await?,
                    Err(e) => {
                        // Usually the broker is unreachable; librdkafka reconnects by itself.
                        if let Some(held_back) = errors.admit(Instant::now()) {
                            tracing::warn!(error = %e, held_back, "Kafka consumer error");
                        }
                    }
                },
                _ = sleep_until(next_due), if next_due.is_some() => {}
            }
        }
        self.drain().await
    }

    /// Starts writing every batch that is due and whose partition has no write in
    /// flight; whether a due batch is left waiting for one.
    fn start_due_writes(&mut self, now: Instant, shutdown: &CancellationToken) -> bool {
        let due: Vec<(TopicPartition, FlushReason)> = self
            .batches
            .iter()
            .filter_map(|(tp, batch)| Some((tp.clone(), self.policy.due(batch, now)?)))
            .collect();
        let mut blocked = false;
        for (tp, reason) in due {
            if self.writing.contains(&tp) {
                blocked = true;
            } else {
                self.start_write(tp, reason, shutdown.clone());
            }
        }
        blocked
    }

    /// When the next batch becomes due by age (batches redoing a recorded block are due
    /// at its end, not by age; a batch waiting for its partition's write is woken by it).
    fn next_deadline(&self) -> Option<Instant> {
        self.batches
            .iter()
            .filter(|(tp, batch)| batch.planned_last.is_none() && !self.writing.contains(tp))
            .filter_map(|(_, batch)| Some(batch.started? + self.policy.max_age))
            .min()
    }

    /// Takes a partition's batch out and writes it in a task of its own.
    fn start_write(&mut self, tp: TopicPartition, reason: FlushReason, stop: CancellationToken) {
        let Some(batch) = self.batches.remove(&tp).filter(|b| !b.is_empty()) else {
            return;
        };
        let writer = self.writer.clone();
        self.writing.insert(tp.clone());
        self.writes.spawn(async move {
            let written = writer.write_block(&tp, batch, reason, &stop).await;
            (tp, written)
        });
    }

    /// A block's write finished: stores the offset after it.
    fn finished(
        &mut self,
        joined: Result<Written, tokio::task::JoinError>,
    ) -> Result<(), RunError> {
        let (tp, written) = match joined {
            Ok(written) => written,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_cancelled) => return Ok(()),
        };
        self.writing.remove(&tp);
        if let Some(last) = written? {
            self.store_offset(&tp, last);
        }
        Ok(())
    }

    /// Waits for the writes in flight, then writes what is pending, within the grace
    /// period.
    async fn drain(mut self) -> Result<(), RunError> {
        let grace = CancellationToken::new();
        let finish = async {
            while let Some(written) = self.writes.join_next().await {
                self.finished(written)?;
            }
            let pending: Vec<TopicPartition> = self.batches.keys().cloned().collect();
            for tp in pending {
                self.start_write(tp, FlushReason::Shutdown, grace.clone());
            }
            while let Some(written) = self.writes.join_next().await {
                self.finished(written)?;
            }
            Ok::<_, RunError>(())
        };
        let result = tokio::time::timeout(SHUTDOWN_GRACE, finish).await;
        grace.cancel();
        result.unwrap_or(Ok(()))
    }

    /// Adds a message to its partition's batch. An undecodable normalized record is
    /// dead-lettered instead; an undecodable dead letter is kept in `dead_letters` as it
    /// was read (a second dead-lettering would only loop).
    async fn add(&mut self, message: &BorrowedMessage<'_>) -> Result<(), RunError> {
        let payload = message.payload().unwrap_or_default();
        let tp = TopicPartition {
            topic: message.topic().to_owned(),
            partition: message.partition(),
        };
        let (offset, now) = (message.offset(), Instant::now());
        if self.batches.get(&tp).is_none_or(Batch::is_empty) {
            let first_record = block::fingerprint(payload);
            let known = self.epochs.get(&tp).copied().unwrap_or_default();
            let plan = self.writer.plan(&tp, offset, first_record, known).await;
            self.epochs.insert(tp.clone(), plan.epoch);
            self.batches.insert(
                tp.clone(),
                Batch {
                    planned_last: plan.planned_last,
                    epoch: plan.epoch,
                    first_record,
                    loaded_at_ms: plan.loaded_at_ms,
                    ..Batch::default()
                },
            );
        }
        let batch = self.batches.entry(tp.clone()).or_default();
        // Continues the webhook's trace (from the header transform set) until the
        // insert; a record that carries no trace costs no span.
        if let Some(traceparent) = runtime::trace::of_message(message) {
            let span = tracing::info_span!(
                "load",
                partition = tp.partition,
                offset,
                block = tracing::field::Empty
            );
            runtime::trace::continue_trace(&span, Some(&traceparent));
            batch.spans.push(span);
        }
        if tp.topic == self.config.topics.dlq_topic {
            let letter = avro::dead_letter()
                .decode(payload)
                .unwrap_or_else(|e| undecodable(message, format!("undecodable dead letter: {e}")));
            batch.add_dead_letter(letter, offset, now);
            return Ok(());
        }
        match avro::normalized_event().decode(payload) {
            Ok(event) => batch.add_event(event, offset, now),
            Err(e) => {
                batch.skip(offset, now);
                let reason = format!("undecodable normalized record: {e}");
                tracing::warn!(%reason, partition = tp.partition, offset, "Dead-lettering a record");
                let letter = undecodable(message, reason);
                self.writer
                    .send_dead_letter(message.key().unwrap_or_default(), &letter)
                    .await?;
                self.writer.metrics.dead_lettered("undecodable", 1);
            }
        }
        Ok(())
    }

    fn store_offset(&self, tp: &TopicPartition, last: i64) {
        let mut list = TopicPartitionList::new();
        // The committed offset is the next one to read.
        if let Err(e) = list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(last + 1))
        {
            tracing::warn!(error = %e, partition = %tp, "Offset not stored");
            return;
        }
        // Fails only for a partition revoked by a rebalance; its new owner redoes the
        // records, and the views collapse the duplicates.
        if let Err(e) = self.consumer.store_offsets(&list) {
            tracing::warn!(error = %e, "Offsets not stored");
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// The loader's dead letter for a message it could not decode.
fn undecodable(message: &BorrowedMessage<'_>, reason: String) -> DeadLetter {
    let position = Position {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
    };
    DeadLetter::of_record(
        Stage::Loader,
        reason,
        &position,
        message.key().unwrap_or_default(),
        message.payload().unwrap_or_default().to_vec(),
        runtime::now_ms(),
    )
}
