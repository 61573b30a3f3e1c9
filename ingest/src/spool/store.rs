//! The thread that owns the spool's database: it commits appends in groups, reads the
//! oldest entries, removes drained ones, and compacts the file once the spool is empty.
//! Only it touches the file, so a compaction never meets an open read.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::{storage, Counters, Entry, SpoolError, EMPTY_FILE_BYTES, ENTRIES, TRACES};
use crate::publisher::Record;

/// Most appends committed together, and most bytes.
const GROUP_ENTRIES: usize = 1024;
const GROUP_BYTES: u64 = 16 << 20;

pub(super) enum Command {
    Append {
        record: Record,
        /// The reservation made for it, given back if the commit fails.
        cost: u64,
        done: oneshot::Sender<Result<(), SpoolError>>,
    },
    Oldest {
        max_entries: usize,
        max_bytes: u64,
        done: oneshot::Sender<Result<Vec<Entry>, SpoolError>>,
    },
    Remove {
        seqs: Vec<u64>,
        done: oneshot::Sender<Result<(), SpoolError>>,
    },
}

struct Append {
    record: Record,
    cost: u64,
    done: oneshot::Sender<Result<(), SpoolError>>,
}

pub(super) struct Owner {
    db: Database,
    path: PathBuf,
    counters: Arc<Counters>,
    next_seq: u64,
}

impl Owner {
    pub(super) fn new(
        db: Database,
        path: PathBuf,
        counters: Arc<Counters>,
        next_seq: u64,
    ) -> Owner {
        Owner {
            db,
            path,
            counters,
            next_seq,
        }
    }

    /// Serves commands until every handle is gone.
    pub(super) fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        self.compact_if_empty();
        let mut pending = None;
        loop {
            let Some(command) = pending.take().or_else(|| commands.blocking_recv()) else {
                return;
            };
            match command {
                Command::Append { record, cost, done } => {
                    let mut group = vec![Append { record, cost, done }];
                    let mut bytes = 0;
                    // Every append already queued shares this commit (and its fsync).
                    while group.len() < GROUP_ENTRIES && bytes < GROUP_BYTES {
                        match commands.try_recv() {
                            Ok(Command::Append { record, cost, done }) => {
                                bytes += record.payload.len() as u64;
                                group.push(Append { record, cost, done });
                            }
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.append(group);
                }
                Command::Oldest {
                    max_entries,
                    max_bytes,
                    done,
                } => {
                    let _ = done.send(self.oldest(max_entries, max_bytes));
                }
                Command::Remove { seqs, done } => {
                    let _ = done.send(self.remove(&seqs));
                }
            }
        }
    }

    fn append(&mut self, group: Vec<Append>) {
        let result = self.commit(&group);
        let counters = &self.counters;
        match &result {
            Ok(bytes) => {
                self.next_seq += group.len() as u64;
                counters.bytes.fetch_add(*bytes, Ordering::AcqRel);
                counters
                    .events
                    .fetch_add(group.len() as u64, Ordering::AcqRel);
            }
            Err(e) => {
                tracing::error!(error = %e, "Spool commit failed");
                let costs = group.iter().map(|a| a.cost).sum();
                counters.reserved.fetch_sub(costs, Ordering::AcqRel);
            }
        }
        self.measure_file();
        for append in group {
            let answer = match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(SpoolError::Storage(e.to_string())),
            };
            let _ = append.done.send(answer);
        }
    }

    /// Writes the group in one transaction; returns the bytes of its entries.
    fn commit(&self, group: &[Append]) -> Result<u64, SpoolError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        let mut size = 0u64;
        {
            let mut table = txn.open_table(ENTRIES).map_err(storage)?;
            let mut traces = txn.open_table(TRACES).map_err(storage)?;
            let mut value = Vec::new();
            for (seq, append) in (self.next_seq..).zip(group) {
                let record = &append.record;
                if let Some(traceparent) = &record.traceparent {
                    traces.insert(seq, traceparent.as_str()).map_err(storage)?;
                }
                value.clear();
                value.extend_from_slice(&(record.key.len() as u32).to_le_bytes());
                value.extend_from_slice(record.key.as_bytes());
                value.extend_from_slice(&record.payload);
                size += value.len() as u64;
                table.insert(seq, value.as_slice()).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
        Ok(size)
    }

    fn oldest(&self, max_entries: usize, max_bytes: u64) -> Result<Vec<Entry>, SpoolError> {
        let read = self.db.begin_read().map_err(storage)?;
        let table = read.open_table(ENTRIES).map_err(storage)?;
        let traces = read.open_table(TRACES).map_err(storage)?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for item in table.iter().map_err(storage)?.take(max_entries) {
            let (seq, value) = item.map_err(storage)?;
            let value = value.value();
            bytes += value.len() as u64;
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            let key_len = u32::from_le_bytes(value[..4].try_into().expect("4 bytes")) as usize;
            let traceparent = traces
                .get(seq.value())
                .map_err(storage)?
                .map(|t| t.value().to_owned());
            out.push(Entry {
                seq: seq.value(),
                record: Record {
                    key: String::from_utf8_lossy(&value[4..4 + key_len]).into_owned(),
                    payload: value[4 + key_len..].to_vec(),
                    traceparent,
                },
            });
        }
        Ok(out)
    }

    fn remove(&mut self, seqs: &[u64]) -> Result<(), SpoolError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        let (mut freed, mut costs, mut removed) = (0u64, 0u64, 0u64);
        {
            let mut table = txn.open_table(ENTRIES).map_err(storage)?;
            let mut traces = txn.open_table(TRACES).map_err(storage)?;
            for &seq in seqs {
                if let Some(value) = table.remove(seq).map_err(storage)? {
                    let len = value.value().len() as u64;
                    freed += len;
                    costs += super::file_cost(len);
                    removed += 1;
                }
                traces.remove(seq).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
        let counters = &self.counters;
        counters.bytes.fetch_sub(freed, Ordering::AcqRel);
        counters.reserved.fetch_sub(costs, Ordering::AcqRel);
        counters.events.fetch_sub(removed, Ordering::AcqRel);
        self.compact_if_empty();
        Ok(())
    }

    /// Gives the disk back once everything was drained: redb reuses freed pages but never
    /// shrinks its file by itself.
    fn compact_if_empty(&mut self) {
        self.measure_file();
        let empty = self.counters.events.load(Ordering::Acquire) == 0;
        if empty && self.counters.file_bytes.load(Ordering::Acquire) > EMPTY_FILE_BYTES {
            if let Err(e) = self.db.compact() {
                tracing::warn!(error = %e, "Could not compact the drained spool");
            }
            self.measure_file();
        }
    }

    fn measure_file(&self) {
        if let Ok(meta) = std::fs::metadata(&self.path) {
            self.counters
                .file_bytes
                .store(meta.len(), Ordering::Release);
        }
    }
}
