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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

const ENTRIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("entries");
const TRACES: TableDefinition<'_, u64, &str> = TableDefinition::new("traces");

/// Why the spool could not take or give back an entry.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool is full ({bytes} of {max_bytes} bytes used)")]
    Full { bytes: u64, max_bytes: u64 },
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
    pub key: String,
    pub payload: Vec<u8>,
    pub traceparent: Option<String>,
}

struct Append {
    key: String,
    payload: Vec<u8>,
    traceparent: Option<String>,
    done: oneshot::Sender<Result<(), SpoolError>>,
}

/// The spool. Cheap to share behind an `Arc`.
pub struct Spool {
    db: Arc<Database>,
    appends: mpsc::Sender<Append>,
    bytes: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
    max_bytes: u64,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, counting what an earlier run left in it.
    /// Must be called inside a tokio runtime (the group-commit writer runs on it).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let unusable = |reason: String| SpoolError::Directory {
            dir: dir.to_owned(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| unusable(e.to_string()))?;
        let probe = dir.join(".write-test");
        std::fs::write(&probe, b"ok").map_err(|e| unusable(format!("cannot write: {e}")))?;
        let _ = std::fs::remove_file(probe);
        // A previous holder in this process (a restart) releases the file when its writer
        // thread ends, which may be a moment after it was dropped: wait for it briefly.
        let path = dir.join("spool.redb");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            // A small page cache: the spool is written once and read once; its memory
            // belongs to the request path.
            match redb::Builder::new().set_cache_size(16 << 20).create(&path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(unusable(e.to_string())),
            }
        };
        let (mut next_seq, mut bytes, mut events) = (0u64, 0u64, 0u64);
        {
            let txn = db.begin_write().map_err(storage)?;
            txn.open_table(ENTRIES).map_err(storage)?;
            txn.open_table(TRACES).map_err(storage)?;
            txn.commit().map_err(storage)?;
            let read = db.begin_read().map_err(storage)?;
            let table = read.open_table(ENTRIES).map_err(storage)?;
            for item in table.iter().map_err(storage)? {
                let (seq, value) = item.map_err(storage)?;
                next_seq = next_seq.max(seq.value() + 1);
                bytes += value.value().len() as u64;
                events += 1;
            }
        }
        let db = Arc::new(db);
        let (appends, rx) = mpsc::channel(4096);
        let spool = Spool {
            db: db.clone(),
            appends,
            bytes: Arc::new(AtomicU64::new(bytes)),
            events: Arc::new(AtomicU64::new(events)),
            max_bytes,
        };
        let (bytes, events) = (spool.bytes.clone(), spool.events.clone());
        tokio::task::spawn_blocking(move || write_loop(&db, rx, next_seq, &bytes, &events));
        Ok(spool)
    }

    /// Appends a delivery durably; returns once it is fsync'd.
    pub async fn append(
        &self,
        key: &str,
        payload: &[u8],
        traceparent: Option<&str>,
    ) -> Result<(), SpoolError> {
        let size = (4 + key.len() + payload.len()) as u64;
        let bytes = self.bytes.load(Ordering::Relaxed);
        if bytes + size > self.max_bytes {
            return Err(SpoolError::Full {
                bytes,
                max_bytes: self.max_bytes,
            });
        }
        let (done, result) = oneshot::channel();
        let append = Append {
            key: key.to_owned(),
            payload: payload.to_vec(),
            traceparent: traceparent.map(str::to_owned),
            done,
        };
        self.appends
            .send(append)
            .await
            .map_err(|_| SpoolError::Stopped)?;
        result.await.map_err(|_| SpoolError::Stopped)?
    }

    /// The oldest entries, at most `max`.
    pub fn oldest(&self, max: usize) -> Result<Vec<Entry>, SpoolError> {
        let read = self.db.begin_read().map_err(storage)?;
        let table = read.open_table(ENTRIES).map_err(storage)?;
        let traces = read.open_table(TRACES).map_err(storage)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(storage)?.take(max) {
            let (seq, value) = item.map_err(storage)?;
            let value = value.value();
            let key_len = u32::from_le_bytes(value[..4].try_into().expect("4 bytes")) as usize;
            let traceparent = traces
                .get(seq.value())
                .map_err(storage)?
                .map(|t| t.value().to_owned());
            out.push(Entry {
                seq: seq.value(),
                key: String::from_utf8_lossy(&value[4..4 + key_len]).into_owned(),
                payload: value[4 + key_len..].to_vec(),
                traceparent,
            });
        }
        Ok(out)
    }

    /// Deletes entries (after Kafka acknowledged them).
    pub fn remove(&self, entries: &[Entry]) -> Result<(), SpoolError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        let mut freed = 0u64;
        let mut removed = 0u64;
        {
            let mut table = txn.open_table(ENTRIES).map_err(storage)?;
            let mut traces = txn.open_table(TRACES).map_err(storage)?;
            for entry in entries {
                if let Some(value) = table.remove(entry.seq).map_err(storage)? {
                    freed += value.value().len() as u64;
                    removed += 1;
                }
                traces.remove(entry.seq).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        self.events.fetch_sub(removed, Ordering::Relaxed);
        Ok(())
    }

    /// Entries waiting.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Bytes of the entries waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether another `size` bytes would fit.
    pub fn has_room(&self) -> bool {
        self.bytes() < self.max_bytes
    }
}

/// Commits appends in groups: takes every append already queued, writes them in one
/// transaction with one fsync, then answers each.
fn write_loop(
    db: &Database,
    mut rx: mpsc::Receiver<Append>,
    mut next_seq: u64,
    bytes: &AtomicU64,
    events: &AtomicU64,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < 1024 {
            match rx.try_recv() {
                Ok(append) => group.push(append),
                Err(_) => break,
            }
        }
        let result = commit(db, &group, next_seq);
        match &result {
            Ok(size) => {
                next_seq += group.len() as u64;
                bytes.fetch_add(*size, Ordering::Relaxed);
                events.fetch_add(group.len() as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "Spool commit failed"),
        }
        for append in group {
            let answer = match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(SpoolError::Storage(e.to_string())),
            };
            let _ = append.done.send(answer);
        }
    }
}

fn commit(db: &Database, group: &[Append], first_seq: u64) -> Result<u64, SpoolError> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate).map_err(storage)?;
    let mut size = 0u64;
    {
        let mut table = txn.open_table(ENTRIES).map_err(storage)?;
        let mut traces = txn.open_table(TRACES).map_err(storage)?;
        let mut value = Vec::new();
        for (i, append) in group.iter().enumerate() {
            if let Some(traceparent) = &append.traceparent {
                traces
                    .insert(first_seq + i as u64, traceparent.as_str())
                    .map_err(storage)?;
            }
            value.clear();
            value.extend_from_slice(&(append.key.len() as u32).to_le_bytes());
            value.extend_from_slice(append.key.as_bytes());
            value.extend_from_slice(&append.payload);
            size += value.len() as u64;
            table
                .insert(first_seq + i as u64, value.as_slice())
                .map_err(storage)?;
        }
    }
    txn.commit().map_err(storage)?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_come_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path(), 1 << 20).unwrap();
            for i in 0..5 {
                spool
                    .append(&format!("acme:call:{i}"), format!("p{i}").as_bytes(), None)
                    .await
                    .unwrap();
            }
            assert_eq!(spool.events(), 5);
            let first = spool.oldest(2).unwrap();
            assert_eq!(first[0].key, "acme:call:0");
            assert_eq!(first[1].payload, b"p1");
            spool.remove(&first).unwrap();
            assert_eq!(spool.events(), 3);
        }
        // A restart (new process) finds what was not removed, and appends after it.
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.events(), 3);
        spool
            .append(
                "acme:call:9",
                b"p9",
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            )
            .await
            .unwrap();
        let entries = spool.oldest(10).unwrap();
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["acme:call:2", "acme:call:3", "acme:call:4", "acme:call:9"]
        );
        // The trace context is kept with the entry it belongs to, and only there.
        let traces: Vec<Option<&str>> = entries.iter().map(|e| e.traceparent.as_deref()).collect();
        assert_eq!(
            traces,
            [
                None,
                None,
                None,
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            ]
        );
    }

    #[tokio::test]
    async fn a_full_spool_refuses_and_frees_room_when_drained() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 100).unwrap();
        spool.append("k", &[0; 60], None).await.unwrap();
        assert!(matches!(
            spool.append("k", &[0; 60], None).await,
            Err(SpoolError::Full { .. })
        ));
        spool.remove(&spool.oldest(1).unwrap()).unwrap();
        assert_eq!(spool.bytes(), 0);
        spool.append("k", &[0; 60], None).await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_appends_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path(), 1 << 24).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let spool = spool.clone();
                tokio::spawn(async move { spool.append(&format!("k{i}"), b"x", None).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(spool.events(), 200);
        assert_eq!(spool.oldest(1000).unwrap().len(), 200);
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let err = Spool::open(&file.path().join("spool"), 1 << 20)
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("spool directory"), "{err}");
    }
}
