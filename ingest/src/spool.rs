//! A durable local spool for deliveries Kafka could not take in time.
//!
//! On disk it is one [redb](https://docs.rs/redb) file, `<INGEST_SPOOL_DIR>/spool.redb`,
//! with one table mapping a sequence number (u64, increasing in arrival order) to an
//! entry: the Kafka key's length (u32, little-endian), the key, then the record exactly as
//! it would have been produced. A second table maps the same sequence number to the
//! delivery's W3C `traceparent`, when it has one (older spool files simply lack it).
//!
//! Crash guarantees: an append returns only after its write transaction committed with
//! `Durability::Immediate`, i.e. after redb fsync'd the data and the commit slot; only
//! then does ingest answer 200. redb's copy-on-write pages and checksummed commit slots
//! mean a crash at any point leaves the last committed state. Entries are deleted only
//! after Kafka acknowledged them, so a crash while draining produces duplicates (removed
//! downstream by event id), never a loss. Appends are committed in groups: concurrent
//! requests share one fsync.
//!
//! Size: the file never grows past `INGEST_SPOOL_MAX_BYTES`. Each append reserves its
//! room before it is queued (so concurrent appends cannot all pass one check), at what it
//! costs in the file ([`file_cost`]), within half the limit, because redb doubles its file
//! when it grows. Once drained, the file is compacted back to its minimal size. One thread
//! owns the database, so compaction never races a reader.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::publisher::Record;

mod store;

const ENTRIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("entries");
const TRACES: TableDefinition<'_, u64, &str> = TableDefinition::new("traces");

/// What an empty spool file takes (redb's header and tables), rounded up.
const EMPTY_FILE_BYTES: u64 = 128 << 10;

/// Why the spool could not take or give back an entry.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool is full ({used} of {capacity} bytes reserved)")]
    Full { used: u64, capacity: u64 },
    #[error("spool directory {dir} is not usable: {reason}")]
    Directory { dir: PathBuf, reason: String },
    #[error("spool storage failed: {0}")]
    Storage(String),
    #[error("spool writer stopped")]
    Stopped,
}

fn storage(e: impl std::fmt::Display) -> SpoolError {
    SpoolError::Storage(e.to_string())
}

/// One spooled delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub record: Record,
}

/// What an entry of `len` bytes (key and record) may take in the file: redb keeps small
/// values together in 4 KiB pages and gives a larger one a run of pages rounded up to a
/// power of two; plus room for its trace and the tree's inner pages. Measured on redb 4.6
/// (100 B: 118, 2,000 B: 2,103, 5,000 B: 8,302, 524,300 B: 1,049,600 bytes a value); an
/// estimate above those.
pub fn file_cost(len: u64) -> u64 {
    let base = if len + 32 <= 2016 {
        len + 32
    } else {
        (len + 64).div_ceil(4096).next_power_of_two() * 4096
    };
    base + base / 16 + 192
}

/// Counters every handle shares with the thread that owns the database.
#[derive(Debug, Default)]
struct Counters {
    /// [`file_cost`] of the entries stored and of the appends on their way.
    reserved: AtomicU64,
    /// Bytes of the entries stored (keys and records).
    bytes: AtomicU64,
    events: AtomicU64,
    file_bytes: AtomicU64,
}

/// The spool. Cheap to share behind an `Arc`.
pub struct Spool {
    commands: mpsc::Sender<store::Command>,
    counters: Arc<Counters>,
    /// Reservable bytes: half the limit (redb doubles its file when it grows), less
    /// what an empty file takes.
    capacity: u64,
    /// The cost of the largest entry a delivery can make (for readiness).
    largest_cost: u64,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, counting what an earlier run left in it.
    /// `largest_entry` is the size of the largest entry a delivery can make.
    pub fn open(dir: &Path, max_bytes: u64, largest_entry: u64) -> Result<Spool, SpoolError> {
        let unusable = |reason: String| SpoolError::Directory {
            dir: dir.to_owned(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| unusable(e.to_string()))?;
        let probe = dir.join(".write-test");
        std::fs::write(&probe, b"ok").map_err(|e| unusable(format!("cannot write: {e}")))?;
        let _ = std::fs::remove_file(probe);
        let path = dir.join("spool.redb");
        let db = create(&path).map_err(unusable)?;
        let counters = Arc::new(Counters::default());
        let next_seq = count(&db, &counters)?;
        let (commands, rx) = mpsc::channel(4096);
        let owner = store::Owner::new(db, path, counters.clone(), next_seq);
        std::thread::Builder::new()
            .name("ingest-spool".into())
            .spawn(move || owner.run(rx))
            .map_err(|e| unusable(e.to_string()))?;
        Ok(Spool {
            commands,
            counters,
            capacity: Spool::capacity(max_bytes),
            largest_cost: file_cost(largest_entry),
        })
    }

    /// The reservable bytes of a spool limited to `max_bytes`.
    pub fn capacity(max_bytes: u64) -> u64 {
        (max_bytes / 2).saturating_sub(EMPTY_FILE_BYTES)
    }

    /// Appends a delivery durably; returns once it is fsync'd.
    pub async fn append(&self, record: Record) -> Result<(), SpoolError> {
        let cost = file_cost(entry_len(&record));
        self.reserve(cost)?;
        let (done, result) = oneshot::channel();
        let command = store::Command::Append { record, cost, done };
        if self.commands.send(command).await.is_err() {
            self.counters.reserved.fetch_sub(cost, Ordering::AcqRel);
            return Err(SpoolError::Stopped);
        }
        // The owner gives the reservation back if the commit fails.
        result.await.map_err(|_| SpoolError::Stopped)?
    }

    fn reserve(&self, cost: u64) -> Result<(), SpoolError> {
        let capacity = self.capacity;
        self.counters
            .reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + cost <= capacity).then_some(used + cost)
            })
            .map(|_| ())
            .map_err(|used| SpoolError::Full { used, capacity })
    }

    /// The oldest entries: at most `max_entries`, and no more than `max_bytes` of them
    /// (but at least one).
    pub async fn oldest(
        &self,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, SpoolError> {
        let (done, result) = oneshot::channel();
        let command = store::Command::Oldest {
            max_entries,
            max_bytes,
            done,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| SpoolError::Stopped)?;
        result.await.map_err(|_| SpoolError::Stopped)?
    }

    /// Deletes entries (after Kafka acknowledged them); compacts the file once empty.
    pub async fn remove(&self, seqs: Vec<u64>) -> Result<(), SpoolError> {
        let (done, result) = oneshot::channel();
        let command = store::Command::Remove { seqs, done };
        self.commands
            .send(command)
            .await
            .map_err(|_| SpoolError::Stopped)?;
        result.await.map_err(|_| SpoolError::Stopped)?
    }

    /// Entries waiting.
    pub fn events(&self) -> u64 {
        self.counters.events.load(Ordering::Acquire)
    }

    /// Bytes of the entries waiting.
    pub fn bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::Acquire)
    }

    /// Length of the spool file.
    pub fn file_bytes(&self) -> u64 {
        self.counters.file_bytes.load(Ordering::Acquire)
    }

    /// Whether the largest delivery would fit now.
    pub fn has_room(&self) -> bool {
        self.counters.reserved.load(Ordering::Acquire) + self.largest_cost <= self.capacity
    }
}

/// The length of a record's entry in the table.
fn entry_len(record: &Record) -> u64 {
    (4 + record.key.len() + record.payload.len()) as u64
}

/// Creates or opens the file. A previous holder in this process (a restart) releases it
/// when its thread ends, which may be a moment after it was dropped: wait for it briefly.
fn create(path: &Path) -> Result<Database, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // A small page cache: the spool is written once and read once; its memory
        // belongs to the request path.
        match redb::Builder::new().set_cache_size(16 << 20).create(path) {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Counts what an earlier run left; returns the next sequence number.
fn count(db: &Database, counters: &Counters) -> Result<u64, SpoolError> {
    let txn = db.begin_write().map_err(storage)?;
    txn.open_table(ENTRIES).map_err(storage)?;
    txn.open_table(TRACES).map_err(storage)?;
    txn.commit().map_err(storage)?;
    let read = db.begin_read().map_err(storage)?;
    let table = read.open_table(ENTRIES).map_err(storage)?;
    let mut next_seq = 0;
    for item in redb::ReadableTable::iter(&table).map_err(storage)? {
        let (seq, value) = item.map_err(storage)?;
        let len = value.value().len() as u64;
        next_seq = seq.value() + 1;
        counters.bytes.fetch_add(len, Ordering::AcqRel);
        counters
            .reserved
            .fetch_add(file_cost(len), Ordering::AcqRel);
        counters.events.fetch_add(1, Ordering::AcqRel);
    }
    Ok(next_seq)
}

#[cfg(test)]
mod tests;
