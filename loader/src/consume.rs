//! Kafka in: the records of every partition of a topic go into one batch, written as one
//! block (one insert per table) when the flush policy says so, by a task of its own; at
//! most one block per topic is in flight, so each partition's offsets are stored in
//! order, once the block that holds them is written.
//!
//! Where a partition is resumed (at start, after a rebalance, after a skipped or repeated
//! block), the block log says what its records are: new, already written (skipped), or
//! part of a block that was being written (cut again exactly, see `block`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use runtime::metrics::LagContext;
use schemas::{avro, DeadLetter, Position, Stage};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, FlushPolicy, FlushReason, Origin, Planned, Segment};
use crate::block::{self, Step};
use crate::metrics::Source;
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

/// The ranges a written block covered (to store their offsets), or `None` when it was
/// not written (shutdown).
type Written = (String, Result<Option<BTreeMap<i32, Segment>>, RunError>);

/// How long writes in flight and pending batches may take once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long a block being cut again may wait for its ranges (a partition may have moved
/// to another loader meanwhile); then it is written as a new block.
const REPEAT_PATIENCE: Duration = Duration::from_secs(30);

/// What the loader knows of a partition it reads.
#[derive(Debug)]
struct PartitionState {
    /// The offset expected next; another one means the partition was resumed elsewhere
    /// and the block log must be asked again.
    next: Option<i64>,
    /// The incarnation of the topic its offsets belong to (see `block`).
    epoch: u32,
    step: Step,
}

/// The batches of one topic.
#[derive(Debug, Default)]
struct TopicState {
    /// Where new records go.
    pending: Batch,
    /// A recorded block being cut again, written before `pending`.
    repeat: Option<Batch>,
    /// When `repeat` was begun.
    repeat_since: Option<Instant>,
    /// A block of this topic is being written.
    writing: bool,
}

/// The consuming side of the loader.
pub struct Consume<'a> {
    config: &'a Config,
    consumer: &'a StreamConsumer<LagContext>,
    writer: Arc<Writer>,
    policy: FlushPolicy,
    topics: BTreeMap<String, TopicState>,
    partitions: BTreeMap<TopicPartition, PartitionState>,
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
            topics: BTreeMap::new(),
            partitions: BTreeMap::new(),
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
                // A due batch waits for its topic's write in flight: consuming waits too,
                // so memory stays bounded while ClickHouse is slow or down.
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

    /// Starts writing each topic's due batch whose topic has no write in flight; whether
    /// a due batch is left waiting for one.
    fn start_due_writes(&mut self, now: Instant, shutdown: &CancellationToken) -> bool {
        let mut blocked = false;
        let mut start = Vec::new();
        for (topic, state) in &mut self.topics {
            let Some((which, reason)) = due(state, &self.policy, now) else {
                continue;
            };
            if state.writing {
                blocked = true;
            } else {
                start.push((topic.clone(), which, reason));
            }
        }
        for (topic, which, reason) in start {
            self.start_write(topic, which, reason, shutdown.clone());
        }
        blocked
    }

    /// Takes a topic's batch out and writes it in a task of its own.
    fn start_write(
        &mut self,
        topic: String,
        which: Which,
        reason: FlushReason,
        stop: CancellationToken,
    ) {
        let state = self.topics.get_mut(&topic).expect("a known topic");
        let batch = match which {
            Which::Repeat => {
                state.repeat_since = None;
                state.repeat.take().expect("a repeated block")
            }
            Which::Pending => std::mem::take(&mut state.pending),
        };
        if batch.is_empty() {
            return;
        }
        state.writing = true;
        let writer = self.writer.clone();
        self.writes.spawn(async move {
            let written = writer.write_block(&topic, batch, reason, &stop).await;
            (topic, written)
        });
    }

    /// When the next batch becomes due by age, or a block being cut again runs out of
    /// patience (a batch waiting for its topic's write is woken by the write).
    fn next_deadline(&self) -> Option<Instant> {
        self.topics
            .values()
            .filter(|state| !state.writing)
            .filter_map(|state| match (&state.repeat, state.repeat_since) {
                (Some(_), Some(since)) => Some(since + REPEAT_PATIENCE),
                _ => Some(state.pending.started? + self.policy.max_age),
            })
            .min()
    }

    /// A block's write finished: stores the offset after each of its ranges.
    fn finished(
        &mut self,
        joined: Result<Written, tokio::task::JoinError>,
    ) -> Result<(), RunError> {
        let (topic, written) = match joined {
            Ok(written) => written,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_cancelled) => return Ok(()),
        };
        if let Some(state) = self.topics.get_mut(&topic) {
            state.writing = false;
        }
        if let Some(segments) = written? {
            let ranges: Vec<(i32, i64)> = segments.iter().map(|(p, s)| (*p, s.last)).collect();
            self.store_offsets(&topic, &ranges);
        }
        Ok(())
    }

    /// Waits for the writes in flight, then writes what is pending, within the grace
    /// period. A block being cut again that is not complete is left for the next start.
    async fn drain(mut self) -> Result<(), RunError> {
        let grace = CancellationToken::new();
        let finish = async {
            while let Some(written) = self.writes.join_next().await {
                self.finished(written)?;
            }
            let topics: Vec<String> = self.topics.keys().cloned().collect();
            for topic in topics {
                let state = self.topics.get_mut(&topic).expect("a known topic");
                let which = match &state.repeat {
                    Some(repeat) if self.policy.due(repeat, Instant::now(), true).is_some() => {
                        Which::Repeat
                    }
                    // Its records come again after the restart; `pending` holds later
                    // offsets of the same partitions, which must not be stored first.
                    Some(_) => continue,
                    None => Which::Pending,
                };
                self.start_write(topic, which, FlushReason::Shutdown, grace.clone());
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

    /// Adds a message to its topic's batch (or skips it, when a written block holds it).
    /// An undecodable normalized record is dead-lettered instead; an undecodable dead
    /// letter is kept in `dead_letters` as it was read (a second dead-lettering would
    /// only loop).
    async fn add(&mut self, message: &BorrowedMessage<'_>) -> Result<(), RunError> {
        let payload = message.payload().unwrap_or_default();
        let tp = TopicPartition {
            topic: message.topic().to_owned(),
            partition: message.partition(),
        };
        let (offset, now) = (message.offset(), Instant::now());
        self.writer
            .metrics
            .record_in(if tp.topic == self.config.topics.dlq_topic {
                Source::Dlq
            } else {
                Source::Normalized
            });
        let step = self.step(&tp, offset, payload).await?;
        let state = self.topics.entry(tp.topic.clone()).or_default();
        let (batch, ends_at) = match step {
            Step::Skip { last } => {
                if offset >= last {
                    self.end_step(&tp);
                    self.store_offsets(&tp.topic, &[(tp.partition, offset)]);
                }
                return Ok(());
            }
            Step::Repeat { last, .. } => {
                (state.repeat.as_mut().expect("a repeated block"), Some(last))
            }
            Step::New => (&mut state.pending, None),
        };
        let epoch = self.partitions.get(&tp).map_or(0, |p| p.epoch);
        let origin = Origin {
            partition: tp.partition,
            offset,
            epoch,
            // Only a range's first record is fingerprinted.
            first_record: if batch.covers(tp.partition) {
                0
            } else {
                block::fingerprint(payload)
            },
            // Asked once per batch while catching up (a lock and a lookup per record
            // otherwise).
            behind: batch.behind || catching_up(&self.policy, self.consumer.context(), message),
        };
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
            batch.add_dead_letter(letter, origin, now);
        } else {
            match avro::normalized_event().decode(payload) {
                Ok(event) => batch.add_event(event, origin, now),
                Err(e) => {
                    batch.skip(origin, now);
                    let reason = format!("undecodable normalized record: {e}");
                    tracing::warn!(%reason, partition = tp.partition, offset, "Dead-lettering a record");
                    let letter = undecodable(message, reason);
                    self.writer
                        .send_dead_letter(message.key().unwrap_or_default(), &letter)
                        .await?;
                    self.writer.metrics.dead_lettered("undecodable", 1);
                }
            }
        }
        if ends_at.is_some_and(|last| offset >= last) {
            self.end_step(&tp);
        }
        Ok(())
    }

    /// What to do with a partition's record at `offset`: asks the block log where the
    /// partition was resumed (a record other than the one expected next).
    async fn step(
        &mut self,
        tp: &TopicPartition,
        offset: i64,
        payload: &[u8],
    ) -> Result<Step, RunError> {
        let known = self.partitions.get(tp);
        let within = |step: &Step| match step {
            Step::Skip { last } | Step::Repeat { last, .. } => offset <= *last,
            Step::New => true,
        };
        if let Some(state) = known.filter(|s| s.next == Some(offset) && within(&s.step)) {
            let step = state.step.clone();
            self.partitions.get_mut(tp).expect("known").next = Some(offset + 1);
            return Ok(step);
        }
        let known_epoch = known.map_or(0, |s| s.epoch);
        // Another loader may have written this partition's events meanwhile.
        self.writer.resumed();
        let plan = self
            .writer
            .plan(tp, offset, block::fingerprint(payload), known_epoch)
            .await;
        let step = match plan.step {
            Step::Repeat {
                block,
                last,
                loaded_at_ms,
            } => {
                if self.prepare_repeat(tp, &block, loaded_at_ms).await {
                    Step::Repeat {
                        block,
                        last,
                        loaded_at_ms,
                    }
                } else {
                    Step::New
                }
            }
            other => other,
        };
        self.partitions.insert(
            tp.clone(),
            PartitionState {
                next: Some(offset + 1),
                epoch: plan.epoch,
                step: step.clone(),
            },
        );
        Ok(step)
    }

    /// The partition's skipped or repeated range is over: its next record starts anew
    /// (the block log is asked again, as another recorded block may start there).
    fn end_step(&mut self, tp: &TopicPartition) {
        if let Some(state) = self.partitions.get_mut(tp) {
            state.step = Step::New;
            state.next = None;
        }
    }

    /// Makes ready to cut `block` again: its ranges must all be read by this loader.
    /// Returns whether the block will be repeated; if not, its records are written as a
    /// new block (rows of it that had gone in are then stored twice, and the views show
    /// them once).
    async fn prepare_repeat(
        &mut self,
        tp: &TopicPartition,
        block: &str,
        loaded_at_ms: u64,
    ) -> bool {
        if let Some(repeat) = self.topics.get(&tp.topic).and_then(|s| s.repeat.as_ref()) {
            return repeat.planned.as_ref().is_some_and(|p| p.name == block);
        }
        let ranges = match self.writer.ranges(&tp.topic, block).await {
            Ok(ranges) if !ranges.is_empty() => ranges,
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!(error = %e, block, "Ranges of a recorded block not readable; writing its records as a new block");
                return false;
            }
        };
        let assigned: Vec<i32> = self
            .consumer
            .assignment()
            .map(|list| {
                list.elements()
                    .iter()
                    .filter(|e| e.topic() == tp.topic)
                    .map(|e| e.partition())
                    .collect()
            })
            .unwrap_or_default();
        let elsewhere: Vec<i32> = ranges
            .keys()
            .filter(|p| !assigned.contains(p))
            .copied()
            .collect();
        if !elsewhere.is_empty() {
            tracing::warn!(
                block,
                ?elsewhere,
                "A block that was being written cannot be cut again exactly: partitions of it are read by another loader. Its rows may be stored twice; the views show them once"
            );
            return false;
        }
        tracing::info!(block, "Cutting again a block that was being written");
        let state = self.topics.entry(tp.topic.clone()).or_default();
        state.repeat = Some(Batch::repeating(
            Planned {
                name: block.to_owned(),
                last: ranges,
            },
            loaded_at_ms,
        ));
        state.repeat_since = Some(Instant::now());
        true
    }

    fn store_offsets(&self, topic: &str, ranges: &[(i32, i64)]) {
        let mut list = TopicPartitionList::new();
        for &(partition, last) in ranges {
            // The committed offset is the next one to read.
            if let Err(e) = list.add_partition_offset(topic, partition, Offset::Offset(last + 1)) {
                tracing::warn!(error = %e, topic, partition, "Offset not stored");
            }
        }
        // Fails only for a partition revoked by a rebalance; its new owner redoes the
        // records, and the views collapse the duplicates.
        if let Err(e) = self.consumer.store_offsets(&list) {
            tracing::warn!(error = %e, "Offsets not stored");
        }
    }
}

/// Which batch of a topic is due.
#[derive(Debug, Clone, Copy)]
enum Which {
    Repeat,
    Pending,
}

/// The topic's batch to write now, if any: a block being cut again comes first (it holds
/// earlier offsets); given up on after `REPEAT_PATIENCE`, it is written as a new block.
fn due(state: &mut TopicState, policy: &FlushPolicy, now: Instant) -> Option<(Which, FlushReason)> {
    let idle = !state.writing;
    if let Some(repeat) = &mut state.repeat {
        if let Some(reason) = policy.due(repeat, now, idle) {
            return Some((Which::Repeat, reason));
        }
        let overdue = state
            .repeat_since
            .is_some_and(|since| now.saturating_duration_since(since) >= REPEAT_PATIENCE);
        if overdue && !repeat.is_empty() {
            tracing::warn!(
                block = repeat.planned.as_ref().map(|p| p.name.as_str()),
                "A block being cut again did not complete in time; writing what it has as a new block"
            );
            repeat.planned = None;
            return Some((Which::Repeat, FlushReason::Age));
        }
        return None;
    }
    policy
        .due(&state.pending, now, idle)
        .map(|reason| (Which::Pending, reason))
}

/// Whether the loader is catching up at `message` (see `FlushPolicy::due`): Kafka stored
/// it more than the age before now, by its timestamp; unless the last statistics say
/// that the broker holds fewer records of its topic beyond those read than a block of an
/// eighth of the row count, which keeps a producer's clock running behind the loader's
/// from looking like a backlog. (The timestamp answers at once, the statistics every
/// 5 s; a timestamp ahead of the loader's clock, or none, reads as not behind.)
fn catching_up(policy: &FlushPolicy, context: &LagContext, message: &BorrowedMessage<'_>) -> bool {
    let late = message.timestamp().to_millis().is_some_and(|stored_ms| {
        runtime::now_ms().saturating_sub(stored_ms) > policy.max_age.as_millis() as i64
    });
    late && context
        .unread(message.topic())
        .is_none_or(|unread| unread >= policy.idle_events() as i64)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Origin;
    use schemas::NormalizedEvent;

    #[test]
    fn a_topic_catching_up_writes_an_eighth_of_the_caps_only_with_no_block_in_flight() {
        let policy = FlushPolicy {
            max_rows: 8_000,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(1),
        };
        let t0 = Instant::now();
        let mut state = TopicState::default();
        for offset in 0..1_000 {
            let origin = Origin {
                partition: 0,
                offset,
                epoch: 0,
                first_record: 0,
                behind: true,
            };
            state
                .pending
                .add_event(NormalizedEvent::default(), origin, t0);
        }
        state.writing = true;
        assert!(due(&mut state, &policy, t0).is_none());
        state.writing = false;
        assert!(matches!(
            due(&mut state, &policy, t0),
            Some((Which::Pending, FlushReason::Idle))
        ));
    }
}
