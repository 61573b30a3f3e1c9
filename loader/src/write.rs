//! Writing one block (a batch of offset ranges of a topic's partitions) to ClickHouse: retried
//! with backoff until the server takes it, rows the server refuses for their values
//! isolated by splitting the insert and sent to the DLQ, and the block recorded in
//! `loader_blocks` first where the block log is on.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{avro, DeadLetter, Entity, Position, Stage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use warehouse::resolve::{self, EntityRef, Settled};
use warehouse::{StoreRow, Table};

use crate::batch::{Batch, FlushReason, Segment};
use crate::block::{self, Plan, Step};
use crate::config::DedupArgs;
use crate::consume::TopicPartition;
use crate::known::Known;
use crate::metrics::{Metrics, Request};
use crate::sink::{Block, Sink, SinkError};
use crate::{RunError, RETRY};

/// Entity-key lookups (1,000 ids each) a block sends at once.
const KEY_DAY_LOOKUPS_AT_ONCE: usize = 4;

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
    /// What is stored, as far as settling a block needs (see `known`).
    known: Mutex<Known>,
    /// How far back the receipts held reach, in milliseconds.
    dedup_window_ms: u64,
    /// The receipts held must be read again (at start, and after a partition was
    /// resumed: another loader may have written its events meanwhile).
    stale: AtomicBool,
}

impl Writer {
    pub fn new(
        sink: Sink,
        dlq: FutureProducer,
        dlq_topic: String,
        group: String,
        metrics: Metrics,
        dedup: &DedupArgs,
    ) -> Writer {
        let dedup_window_ms = dedup.dedup_window_s.saturating_mul(1000);
        Writer {
            sink,
            dlq,
            dlq_topic,
            group,
            metrics,
            known: Mutex::new(Known::new(dedup_window_ms, dedup.dedup_max_events)),
            dedup_window_ms,
            stale: AtomicBool::new(true),
        }
    }

    /// A partition was resumed somewhere: the receipts held are read again before the
    /// next block.
    pub fn resumed(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// What a partition's records are from `offset` on, where the record read has the
    /// fingerprint `first_record` (see `block::plan`). Without an answer from
    /// `loader_blocks` they are taken as new, of the newest epoch known: rows may then be
    /// stored twice, and the views still show them once.
    pub async fn plan(
        &self,
        tp: &TopicPartition,
        offset: i64,
        first_record: u64,
        known_epoch: u32,
    ) -> Plan {
        if !self.sink.block_log {
            return block::plan(None, 0, first_record);
        }
        match self.sink.recorded_range(&self.group, tp, offset).await {
            Ok((recorded, max_epoch)) => {
                let plan = block::plan(recorded, max_epoch.max(known_epoch), first_record);
                match &plan.step {
                    Step::Skip { last } => {
                        tracing::info!(partition = %tp, offset, last, "Skipping records a written block holds")
                    }
                    Step::Repeat { block, last, .. } => {
                        tracing::info!(partition = %tp, offset, last, block, "Records of a block that was being written")
                    }
                    Step::New => {}
                }
                if plan.restarted {
                    tracing::warn!(
                        partition = %tp,
                        offset,
                        epoch = plan.epoch,
                        "Kafka offsets restarted (topic recreated or its data reset): offset {offset} holds another record than the block recorded there; new blocks of this partition belong to epoch {}, so their deduplication tokens cannot match older blocks",
                        plan.epoch
                    );
                    self.metrics.offsets_restarted.inc();
                }
                plan
            }
            Err(e) => {
                tracing::warn!(error = %e, partition = %tp, "Recorded blocks not readable; taking the records as new");
                block::plan(None, known_epoch, first_record)
            }
        }
    }

    /// Per partition, the last offset of each range of the recorded block `name`.
    pub async fn ranges(&self, topic: &str, name: &str) -> Result<BTreeMap<i32, i64>, SinkError> {
        self.sink.block_ranges(&self.group, topic, name).await
    }

    /// Writes a batch of `topic` as one block, retrying with backoff until ClickHouse
    /// accepts it or `stop` is cancelled (then `None`: not written, its offsets are not
    /// to be stored); sends the rows refused for their values to the DLQ. A new block is
    /// recorded in `loader_blocks` first; every block is marked done once written.
    /// Returns the ranges the block covered.
    pub async fn write_block(
        &self,
        topic: &str,
        mut batch: Batch,
        reason: FlushReason,
        stop: &CancellationToken,
    ) -> Result<Option<BTreeMap<i32, Segment>>, RunError> {
        // A block cut again after a crash repeats its recorded `loaded_at`, so that the
        // server drops what it already holds; unless resends must differ (see
        // `Sink::resends_differ`): then every block gets its own, whatever it repeats (a
        // block cut again, or the records of one that ran out of patience and are
        // written as they came).
        if batch.loaded_at_ms == 0 || self.sink.resends_differ() {
            batch.loaded_at_ms = u64::try_from(runtime::now_ms()).unwrap_or_default();
        }
        batch.tables.stamp(batch.loaded_at_ms);
        let name = match &batch.planned {
            Some(planned) => planned.name.clone(),
            None => block::name(&self.group, topic, &batch.segments),
        };
        let started = Instant::now();
        let insert_span =
            tracing::info_span!("clickhouse_insert", block = %name, events = batch.events);
        let mut attempt = 0;
        let mut recorded = batch.planned.is_some();
        let mut settled: Option<Settled> = None;
        let token = self.sink.dedup_tokens.then_some(name.as_str());
        let rejected = loop {
            let result = async {
                if settled.is_none() {
                    settled = Some(self.settle(&mut batch).await?);
                }
                let new_keys = settled.as_ref().map_or(&[][..], |s| &s.new_keys[..]);
                let record = Block {
                    name: &name,
                    segments: &batch.segments,
                    loaded_at_ms: batch.loaded_at_ms,
                };
                if self.sink.block_log && !recorded {
                    self.timed(
                        Request::BlockLog,
                        self.sink.record_block(&self.group, topic, &record, false),
                    )
                    .await?;
                    recorded = true;
                }
                if !new_keys.is_empty() {
                    let token = token.map(|block| format!("{block}/entity_keys"));
                    self.timed(
                        Request::EntityKeys,
                        self.sink.insert_keys(new_keys, token.as_deref()),
                    )
                    .await?;
                }
                let rejected = self.write_tables(&batch, &name).await?;
                if self.sink.block_log {
                    self.timed(
                        Request::BlockLog,
                        self.sink.record_block(&self.group, topic, &record, true),
                    )
                    .await?;
                }
                Ok::<_, SinkError>(rejected)
            }
            .instrument(insert_span.clone())
            .await;
            let e = match result {
                Ok(rejected) => break rejected,
                Err(e) => e,
            };
            attempt += 1;
            self.metrics.insert_retries.inc();
            self.sink.failed(&e);
            if self.sink.resends_differ() {
                batch.loaded_at_ms = batch
                    .loaded_at_ms
                    .max(u64::try_from(runtime::now_ms()).unwrap_or_default())
                    + 1;
                batch.tables.stamp(batch.loaded_at_ms);
            }
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
        self.remember(&batch, settled.as_ref());
        for refused in &rejected {
            self.set_aside(topic, &batch, refused).await?;
        }
        tracing::debug!(
            block = %name,
            events = batch.events,
            refused = rejected.len(),
            reason = reason.as_str(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Batch written"
        );
        self.metrics.batch(
            &batch,
            reason,
            rejected.len(),
            started.elapsed(),
            runtime::now_ms(),
        );
        for span in &batch.spans {
            span.record("block", name.as_str());
        }
        let segments = std::mem::take(&mut batch.segments);
        // Dropping the spans closes them: each event's trace ends at its insert (here,
        // before the exporter may shut down). Freeing the rows of a block of 50,000
        // events took 40-100 ms, which the topic's next block would wait for: they are
        // freed on a thread of its own.
        drop(std::mem::take(&mut batch.spans));
        tokio::task::spawn_blocking(move || drop(batch));
        Ok(Some(segments))
    }

    /// Drops the block's sender duplicates and gives its rows their entities' days (see
    /// `warehouse::resolve`), reading what it needs of what is stored.
    async fn settle(&self, batch: &mut Batch) -> Result<Settled, SinkError> {
        if batch.tables.raw.is_empty() {
            return Ok(Settled::default());
        }
        if self.stale.swap(false, Ordering::Relaxed) {
            if let Err(e) = self.read_receipts().await {
                self.stale.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        let wanted = resolve::entities(&batch.tables);
        let unknown: Vec<EntityRef> = self
            .known
            .lock()
            .expect("known lock")
            .unknown_days(&wanted)
            .into_iter()
            .cloned()
            .collect();
        let mut groups: BTreeMap<(&str, Entity), Vec<&str>> = BTreeMap::new();
        for (tenant, entity, id) in &unknown {
            groups.entry((tenant, *entity)).or_default().push(id);
        }
        // A few at once: a block of new calls asks for thousands of ids, and the server
        // limits the queries it runs at once (`max_concurrent_queries`).
        let mut lookups = Vec::new();
        for ((tenant, entity), ids) in &groups {
            for chunk in ids.chunks(1000) {
                lookups.push(async move {
                    let days = self.sink.key_days(tenant, entity.as_str(), chunk).await?;
                    Ok::<_, SinkError>((*tenant, *entity, days))
                });
            }
        }
        let found: Vec<_> = self
            .timed(
                Request::KeyDays,
                futures::stream::iter(lookups)
                    .buffer_unordered(KEY_DAY_LOOKUPS_AT_ONCE)
                    .try_collect(),
            )
            .await?;
        {
            let mut known = self.known.lock().expect("known lock");
            for (tenant, entity, days) in found {
                for (id, day) in days {
                    known.day((tenant.to_owned(), entity, id), day);
                }
            }
        }
        let now_ms = u64::try_from(runtime::now_ms()).unwrap_or_default();
        let settled = {
            let known = self.known.lock().expect("known lock");
            resolve::settle(&mut batch.tables, &*known, now_ms)
        };
        let mut kept = settled.kept_raw.iter();
        batch.raw_offsets.retain(|_| *kept.next().unwrap_or(&true));
        if settled.duplicates > 0 {
            self.metrics
                .duplicates_dropped
                .inc_by(settled.duplicates as u64);
        }
        Ok(settled)
    }

    /// Reads the first receipts of the events of the dedup window.
    async fn read_receipts(&self) -> Result<(), SinkError> {
        let window_s = i64::try_from(self.dedup_window_ms / 1000).unwrap_or(i64::MAX);
        let since_s =
            u32::try_from((runtime::now_ms() / 1000).saturating_sub(window_s)).unwrap_or_default();
        let limit = self.known.lock().expect("known lock").capacity();
        let receipts = self
            .timed(Request::Receipts, self.sink.recent_receipts(since_s, limit))
            .await?;
        let mut known = self.known.lock().expect("known lock");
        for (tenant, event_id, received_at_ms) in &receipts {
            known.receipt(tenant, event_id, *received_at_ms);
        }
        tracing::info!(
            events = receipts.len(),
            window_s,
            "Read the receipts of recent events"
        );
        Ok(())
    }

    /// Holds what a written block stored: its events' receipts and its new entity days.
    fn remember(&self, batch: &Batch, settled: Option<&Settled>) {
        let mut known = self.known.lock().expect("known lock");
        for r in &batch.tables.raw {
            known.receipt(&r.tenant, &r.event_id, r.received_at_ms);
        }
        for key in settled.iter().flat_map(|s| &s.new_keys) {
            if let Some(entity) = Entity::from_name(&key.entity) {
                known.day(
                    (key.tenant.clone(), entity, key.entity_id.clone()),
                    key.key_day,
                );
            }
        }
    }

    /// Awaits one request to ClickHouse, adding the time it took to `step`'s total.
    async fn timed<T>(&self, step: Request, request: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let answer = request.await;
        self.metrics.waited(step, started.elapsed());
        answer
    }

    /// Writes a batch, one insert per storage table: the typed tables, the dead letters
    /// and the field reports at once (their inserts are independent; the server runs
    /// each in a thread of its own), then `raw_events_store_v2`, so that an event in `raw_events` has its
    /// typed rows in place too. Each insert has a deduplication token derived from
    /// `block` where the server supports tokens. Rows the server refuses for their
    /// values are returned; the rest is written. Idempotent: writing the same batch again
    /// adds nothing readers see.
    async fn write_tables(&self, batch: &Batch, block: &str) -> Result<Vec<Rejected>, SinkError> {
        let t = &batch.tables;
        let token = self.sink.dedup_tokens.then_some(block);
        let (calls, contacts, contact_lists, messages, dead_letters, unmapped) = tokio::try_join!(
            self.insert_isolating(&t.calls, token),
            self.insert_isolating(&t.contacts, token),
            self.insert_isolating(&t.contact_lists, token),
            self.insert_isolating(&t.messages, token),
            self.insert_isolating(&t.dead_letters, token),
            self.insert_isolating(&t.unmapped, token),
        )?;
        let raw = self.insert_isolating(&t.raw, token).await?;
        Ok([
            calls,
            contacts,
            contact_lists,
            messages,
            dead_letters,
            unmapped,
            raw,
        ]
        .concat())
    }

    /// Inserts `rows`; on a bad-data refusal, splits them in halves until the refused
    /// rows are alone, and returns those. Every sub-insert has its own
    /// token, a function of the block and the row range, so a redone block repeats them.
    async fn insert_isolating<T>(
        &self,
        rows: &[T],
        block_token: Option<&str>,
    ) -> Result<Vec<Rejected>, SinkError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite + StoreRow,
    {
        let table = T::TABLE;
        let mut rejected = Vec::new();
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
            let started = Instant::now();
            let result = self.sink.insert(&rows[lo..hi], token.as_deref()).await;
            self.metrics.inserting(table, started.elapsed());
            match result {
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
        Ok(rejected)
    }

    /// Sends a row ClickHouse refused to the DLQ (from where it lands in
    /// `dead_letters`). A refused dead letter is only logged: sending it back would loop.
    async fn set_aside(
        &self,
        topic: &str,
        batch: &Batch,
        refused: &Rejected,
    ) -> Result<(), RunError> {
        let (partition, offset) = batch.offset_of(&refused.event_id).unwrap_or((-1, -1));
        tracing::warn!(
            table = %refused.table,
            event_id = %refused.event_id,
            topic,
            partition,
            offset,
            error = %refused.error,
            "ClickHouse refused a row; dead-lettering it"
        );
        if refused.table == Table::DeadLetters {
            tracing::error!(row = %refused.row, "A dead letter was refused by ClickHouse; it stays only in the DLQ topic");
            return Ok(());
        }
        let position = Position {
            topic: topic.to_owned(),
            partition,
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
