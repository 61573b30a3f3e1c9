//! Writing one block (a batch of one partition's offset range) to ClickHouse: retried
//! with backoff until the server takes it, rows the server refuses for their values
//! isolated by splitting the insert and sent to the DLQ, and the block recorded in
//! `loader_blocks` first where the block log is on.

use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{avro, DeadLetter, Position, Stage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use warehouse::{StoreRow, Table};

use crate::batch::{Batch, FlushReason};
use crate::block::{self, Plan};
use crate::consume::TopicPartition;
use crate::metrics::Metrics;
use crate::sink::{Block, Sink, SinkError};
use crate::{RunError, RETRY};

/// A row the server refused for its values, set aside from an insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub table: Table,
    pub event_id: String,
    pub tenant: String,
    /// The row as JSON.
    pub row: String,
    pub error: String,
}

/// What writing a block needs; shared by the tasks that write blocks.
pub struct Writer {
    sink: Sink,
    dlq: FutureProducer,
    dlq_topic: String,
    group: String,
    pub(crate) metrics: Metrics,
}

impl Writer {
    pub fn new(
        sink: Sink,
        dlq: FutureProducer,
        dlq_topic: String,
        group: String,
        metrics: Metrics,
    ) -> Writer {
        Writer {
            sink,
            dlq,
            dlq_topic,
            group,
            metrics,
        }
    }

    /// How to cut the batch that starts at `first_offset` with a record of fingerprint
    /// `first_record`: repeating a block recorded before a restart (same end, same
    /// `loaded_at`), or a new block, in a new epoch when the partition's offsets
    /// restarted. Without an answer from `loader_blocks` the batch is cut as a new block
    /// of the newest epoch known: its rows may then be stored twice, and the views still
    /// show them once.
    pub async fn plan(
        &self,
        tp: &TopicPartition,
        first_offset: i64,
        first_record: u64,
        known_epoch: u32,
    ) -> Plan {
        let now_ms = u64::try_from(runtime::now_ms()).unwrap_or_default();
        if !self.sink.block_log {
            return block::plan(None, 0, first_record, now_ms);
        }
        match self
            .sink
            .recorded_block(&self.group, tp, first_offset)
            .await
        {
            Ok((recorded, max_epoch)) => {
                let plan = block::plan(recorded, max_epoch.max(known_epoch), first_record, now_ms);
                if let Some(last) = plan.planned_last {
                    tracing::info!(partition = %tp, first_offset, last, epoch = plan.epoch, "Redoing a recorded block");
                }
                if plan.restarted {
                    tracing::warn!(
                        partition = %tp,
                        first_offset,
                        epoch = plan.epoch,
                        "Kafka offsets restarted (topic recreated or its data reset): offset {first_offset} holds another record than the block recorded there; new blocks of this partition belong to epoch {}, so their deduplication tokens cannot match older blocks",
                        plan.epoch
                    );
                    self.metrics.offsets_restarted.inc();
                }
                plan
            }
            Err(e) => {
                tracing::warn!(error = %e, partition = %tp, "Recorded blocks not readable; cutting a new block");
                block::plan(None, known_epoch, first_record, now_ms)
            }
        }
    }

    /// Writes one partition's batch, retrying with backoff until ClickHouse accepts it
    /// or `stop` is cancelled (then `None`: not written, its offsets are not to be
    /// stored); sends the rows refused for their values to the DLQ. Returns the last
    /// offset of the block.
    pub async fn write_block(
        &self,
        tp: &TopicPartition,
        batch: Batch,
        reason: FlushReason,
        stop: &CancellationToken,
    ) -> Result<Option<i64>, RunError> {
        let (first, last) = (batch.first_offset, batch.last_offset);
        let block = block::name(
            &self.group,
            &tp.topic,
            tp.partition,
            batch.epoch,
            first,
            last,
        );
        let record = Block {
            epoch: batch.epoch,
            first_offset: first,
            last_offset: last,
            first_record: batch.first_record,
            loaded_at_ms: batch.loaded_at_ms,
        };
        let started = Instant::now();
        let insert_span =
            tracing::info_span!("clickhouse_insert", block = %block, events = batch.events);
        let mut attempt = 0;
        let rejected = loop {
            let result = async {
                if self.sink.block_log && batch.planned_last != Some(last) {
                    self.sink.record_block(&self.group, tp, &record).await?;
                }
                self.write_tables(&batch, &block).await
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
            if !RETRY.wait(attempt, stop).await {
                return Ok(None);
            }
        };
        for refused in &rejected {
            self.set_aside(tp, &batch, refused).await?;
        }
        tracing::debug!(
            partition = %tp,
            first,
            last,
            events = batch.events,
            refused = rejected.len(),
            reason = reason.as_str(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Batch written"
        );
        let source = if tp.topic == self.dlq_topic {
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

    /// Writes a batch, one insert per storage table (`raw_events_store` last, so that an
    /// event in `raw_events` has its typed rows in place too), each with a deduplication
    /// token derived from `block` where the server supports tokens. Rows the server
    /// refuses for their values are returned; the rest is written. Idempotent: writing
    /// the same batch again adds nothing readers see.
    async fn write_tables(&self, batch: &Batch, block: &str) -> Result<Vec<Rejected>, SinkError> {
        let t = &batch.tables;
        let token = self.sink.dedup_tokens.then_some(block);
        let mut rejected = Vec::new();
        self.insert_isolating(&t.calls, token, &mut rejected)
            .await?;
        self.insert_isolating(&t.contacts, token, &mut rejected)
            .await?;
        self.insert_isolating(&t.contact_lists, token, &mut rejected)
            .await?;
        self.insert_isolating(&t.messages, token, &mut rejected)
            .await?;
        self.insert_isolating(&t.dead_letters, token, &mut rejected)
            .await?;
        self.insert_isolating(&t.raw, token, &mut rejected).await?;
        Ok(rejected)
    }

    /// Inserts `rows`; on a bad-data refusal, splits them in halves until the refused
    /// rows are alone, and sets those aside in `rejected`. Every sub-insert has its own
    /// token, a function of the block and the row range, so a redone block repeats them.
    async fn insert_isolating<T>(
        &self,
        rows: &[T],
        block_token: Option<&str>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), SinkError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite + StoreRow,
    {
        let table = T::TABLE;
        let mut pending = vec![(0, rows.len())];
        while let Some((lo, hi)) = pending.pop() {
            if lo == hi {
                continue;
            }
            let token = block_token.map(|block| {
                if (lo, hi) == (0, rows.len()) {
                    format!("{block}/{table}")
                } else {
                    format!("{block}/{table}/{lo}-{hi}")
                }
            });
            match self.sink.insert(&rows[lo..hi], token.as_deref()).await {
                Ok(()) => self.metrics.inserted(table),
                Err(e) if e.is_bad_data() && hi - lo == 1 => {
                    let row = &rows[lo];
                    rejected.push(Rejected {
                        table,
                        event_id: row.event_id().to_owned(),
                        tenant: row.tenant().to_owned(),
                        row: serde_json::to_string(row).unwrap_or_default(),
                        error: e.to_string(),
                    });
                }
                Err(e) if e.is_bad_data() => {
                    let mid = lo + (hi - lo) / 2;
                    pending.push((mid, hi));
                    pending.push((lo, mid));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends a row ClickHouse refused to the DLQ (from where it lands in
    /// `dead_letters`). A refused dead letter is only logged: sending it back would loop.
    async fn set_aside(
        &self,
        tp: &TopicPartition,
        batch: &Batch,
        refused: &Rejected,
    ) -> Result<(), RunError> {
        let offset = batch.offset_of(&refused.event_id).unwrap_or(-1);
        tracing::warn!(
            table = %refused.table,
            event_id = %refused.event_id,
            partition = %tp,
            offset,
            error = %refused.error,
            "ClickHouse refused a row; dead-lettering it"
        );
        if refused.table == Table::DeadLetters {
            tracing::error!(row = %refused.row, "A dead letter was refused by ClickHouse; it stays only in the DLQ topic");
            return Ok(());
        }
        let position = Position {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset,
        };
        let letter = DeadLetter::of_record(
            Stage::Loader,
            format!(
                "ClickHouse refused the {} row: {}",
                refused.table, refused.error
            ),
            &position,
            b"",
            refused.row.clone().into_bytes(),
            runtime::now_ms(),
        )
        .for_event(&refused.event_id, &refused.tenant, "");
        self.send_dead_letter(refused.event_id.as_bytes(), &letter)
            .await
    }

    /// Produces a dead letter to the DLQ topic and waits for Kafka to acknowledge it.
    pub async fn send_dead_letter(&self, key: &[u8], letter: &DeadLetter) -> Result<(), RunError> {
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
