//! ClickHouse: the connection, what the server supports, and inserts. The parts:
//! [`error`] (which failures are worth retrying), [`schema`] (migrations), [`blocks`]
//! (the block log), [`lookups`] (what settling a block reads and writes).

mod blocks;
mod error;
mod lookups;
mod schema;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clickhouse::Client;
use warehouse::layout::Layout;
use warehouse::{StoreRow, Table};

use crate::config::{ClickHouseArgs, Switch, WireCompression};

pub use blocks::Block;
pub use error::SinkError;

/// How many recent insert tokens a table remembers, when the server supports tokens.
const DEDUP_WINDOW: u32 = 10_000;

/// A ClickHouse database the loader writes to.
pub struct Sink {
    /// One client per server of `CLICKHOUSE_URLS`; `current` is the one in use, and a
    /// network failure moves to the next.
    servers: Vec<(String, Client)>,
    current: AtomicUsize,
    database: String,
    /// One server, or a cluster (Replicated engines, Distributed tables).
    layout: Layout,
    /// Replicas per shard in a cluster (the quorum of block-log writes); 1 otherwise.
    replicas: u32,
    /// Inserts carry `insert_deduplication_token`: the server has them (ClickHouse 22.2
    /// and later) and the block log is on. Without the block log a token would name only
    /// offsets, and could collide with an older block's after Kafka's offsets restart.
    pub dedup_tokens: bool,
    /// Every insert's offset range is recorded in `loader_blocks` first.
    pub block_log: bool,
    /// The database's schema version.
    version: u32,
    /// Inserts ask for `async_insert=0`: a block must be its own insert, acknowledged
    /// once written (servers that know the setting; current ones may default it to 1).
    sync_inserts: bool,
    /// The server has column TTL and `mutations_sync` (see [`supports_ttl`]).
    pub ttl: bool,
    /// A block sent again must differ from what was sent before (see
    /// [`Sink::resends_differ`]).
    resends_differ: bool,
}

/// What connecting does about the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Apply the migrations the database has not seen (one server at start, and
    /// `loader migrate`).
    Migrate,
    /// Only check that the database is at the version this loader knows (a cluster
    /// migrates once, by `loader migrate`, not by every loader at start).
    Check,
}

impl Sink {
    /// Connects to the first server that answers, creates the database and applies
    /// pending migrations (or checks the schema, see [`Schema`]), and picks the
    /// exactly-once mode the servers support, which it logs. Row validation by the
    /// client is used only where the server supports it (not on ClickHouse < 24).
    pub async fn connect(
        args: &ClickHouseArgs,
        block_log: Switch,
        schema: Schema,
    ) -> Result<Sink, SinkError> {
        let layout = Layout::from_cluster_setting(&args.cluster)
            .expect("CLICKHOUSE_CLUSTER is checked when the settings are read");
        let urls = args.urls();
        let servers: Vec<(String, Client)> = urls
            .iter()
            .map(|url| {
                let client = Client::default()
                    .with_url(url)
                    .with_user(&args.user)
                    .with_password(&args.password)
                    .with_validation(false)
                    .with_compression(match args.compression {
                        WireCompression::None => clickhouse::Compression::None,
                        WireCompression::Lz4 => clickhouse::Compression::Lz4,
                    });
                (url.clone(), client)
            })
            .collect();
        let (current, version) = first_answering(&servers).await?;
        let validation = args.validation.resolve(supports_validation(&version));
        let has_tokens = supports_dedup_token(&version);
        // A cluster of replicas drops a block sent again by its hash, whatever the
        // version, provided it is the same to the byte: the block log makes it so (and
        // where that would skip the views, 18.16, resends are made to differ instead).
        let block_log = block_log.resolve(has_tokens || layout.cluster().is_some());
        let resends_differ = resends_must_differ(layout.cluster().is_some(), &version);
        let mut sink = Sink {
            servers,
            current: AtomicUsize::new(current),
            database: args.database.clone(),
            layout,
            replicas: 1,
            dedup_tokens: has_tokens && block_log,
            block_log,
            sync_inserts: has_tokens,
            ttl: supports_ttl(&version),
            resends_differ,
            version: 0,
        };
        if let Some(cluster) = sink.layout.cluster() {
            sink.replicas = sink.cluster_replicas(cluster, &urls[current]).await?;
        }
        // Migrations name the database in every statement: it may not exist yet.
        sink.version = match schema {
            Schema::Migrate => sink.migrate().await?,
            Schema::Check => sink.check_version().await?,
        };
        if has_tokens && sink.layout.cluster().is_none() {
            for table in Table::ALL {
                sink.execute(&format!(
                    "ALTER TABLE {}.{table} MODIFY SETTING non_replicated_deduplication_window = {DEDUP_WINDOW}",
                    sink.database
                ))
                .await?;
            }
        }
        tracing::info!(
            server = %version,
            url = %urls[current],
            cluster = sink.layout.cluster().unwrap_or(""),
            replicas = sink.replicas,
            validation,
            database = %args.database,
            schema_version = sink.version,
            exactly_once = match (has_tokens, sink.dedup_tokens, sink.layout.cluster().is_some() && sink.block_log) {
                (true, true, _) => "insert deduplication tokens per recorded block, and views merged by event id",
                (false, _, true) => "views merged by event id (a block sent again carries a new loaded_at: this server would skip the views of a block its replicated tables drop as a duplicate)",
                (true, false, _) => "views merged by event id (LOADER_BLOCK_LOG=off: no insert deduplication tokens)",
                _ => "views merged by event id (this server has no insert deduplication tokens)",
            },
            block_log = sink.block_log,
            "Connected to ClickHouse"
        );
        for (_, client) in &mut sink.servers {
            *client = client
                .clone()
                .with_database(&args.database)
                .with_validation(validation);
        }
        Ok(sink)
    }

    /// The database the tables live in.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Whether a block sent again must carry a new `loaded_at`, so that it hashes
    /// differently. A Replicated table drops a block it has seen by its hash, and a server
    /// without `deduplicate_blocks_in_dependent_materialized_views` (before 22.2 here: 18.16
    /// in a cluster) then skips the materialized views too. A server killed after it
    /// stored a block but before the views stored theirs would leave the aggregate states
    /// without the block's rows for good. Sent again with a new `loaded_at`, the block is
    /// stored again: the storage tables collapse the copies (ReplacingMergeTree, and the
    /// views merge by event id), and every state the views feed is unchanged by a row
    /// added twice (`maxIf` over `(received_at, loaded_at, value)`, `uniqExact`,
    /// `groupUniqArray`), so the copies cost disk until merged, and lose nothing.
    pub fn resends_differ(&self) -> bool {
        self.resends_differ
    }

    /// The cluster the tables live on, if any.
    pub fn cluster(&self) -> Option<&str> {
        self.layout.cluster()
    }

    /// The client of the server in use.
    pub(crate) fn client(&self) -> &Client {
        &self.servers[self.current.load(Ordering::Relaxed) % self.servers.len()].1
    }

    /// After a failure: a server that cannot be reached (or is not in a write quorum
    /// any more) gives way to the next one of `CLICKHOUSE_URLS`.
    pub fn failed(&self, e: &SinkError) {
        if self.servers.len() > 1 && e.is_server_unreachable() {
            let next = (self.current.fetch_add(1, Ordering::Relaxed) + 1) % self.servers.len();
            tracing::warn!(url = %self.servers[next].0, error = %e, "Moving to another ClickHouse server");
        }
    }

    /// Replicas per shard of the cluster, as the server sees it.
    async fn cluster_replicas(&self, cluster: &str, url: &str) -> Result<u32, SinkError> {
        let replicas: Option<u32> = self
            .client()
            .query(
                "SELECT max(replica_num) FROM system.clusters WHERE cluster = ? HAVING count() > 0",
            )
            .bind(cluster)
            .fetch_optional()
            .await
            .map_err(SinkError::at("reading system.clusters"))?;
        replicas.ok_or_else(|| SinkError::UnknownCluster {
            cluster: cluster.to_owned(),
            url: url.to_owned(),
        })
    }

    pub(crate) async fn execute(&self, sql: &str) -> Result<(), SinkError> {
        let head: String = sql.chars().take(80).collect();
        self.client()
            .query(sql)
            // ON CLUSTER statements wait for every server up to this long (default 180 s).
            .with_setting("distributed_ddl_task_timeout", "60")
            .execute()
            .await
            .map_err(SinkError::at(format!("statement `{head}…`")))
    }

    /// Records an erasure in its audit table.
    pub async fn insert_audit(&self, row: &warehouse::erasure::AuditRow) -> Result<(), SinkError> {
        self.insert_into("erasures", std::slice::from_ref(row), None, &[])
            .await
    }

    /// Inserts `rows` into their table, with `token` as the insert's deduplication token.
    pub async fn insert<T>(&self, rows: &[T], token: Option<&str>) -> Result<(), SinkError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite + StoreRow,
    {
        self.insert_into(T::TABLE.name(), rows, token, &[]).await
    }

    async fn insert_into<T>(
        &self,
        table: &str,
        rows: &[T],
        token: Option<&str>,
        settings: &[(&str, &str)],
    ) -> Result<(), SinkError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client()
            .insert::<T>(table)
            .await
            .map_err(SinkError::at(format!("insert into {table}")))?
            .with_timeouts(Some(Duration::from_secs(30)), Some(Duration::from_secs(60)));
        if self.sync_inserts {
            insert = insert.with_setting("async_insert", "0");
        }
        if self.layout.cluster().is_some() {
            // Acknowledged only once every shard stored its part of the block.
            insert = insert.with_setting("insert_distributed_sync", "1");
        }
        for (name, value) in settings {
            insert = insert.with_setting(*name, *value);
        }
        if let Some(token) = token {
            insert = insert.with_setting("insert_deduplication_token", token);
        }
        if self.sync_inserts {
            // A server killed after it stored a block but before the views fed by it
            // stored theirs would, on the block's retry, drop it as a duplicate and skip
            // the views; with this, the views get it and drop only what they hold. (Older
            // servers lack it: there, resends differ, see `resends_differ`.)
            insert = insert.with_setting("deduplicate_blocks_in_dependent_materialized_views", "1");
        }
        for row in rows {
            insert
                .write(row)
                .await
                .map_err(SinkError::at(format!("insert into {table}")))?;
        }
        insert
            .end()
            .await
            .map_err(SinkError::at(format!("insert into {table}")))
    }
}

/// The first server that answers `SELECT version()`, and its version.
async fn first_answering(servers: &[(String, Client)]) -> Result<(usize, String), SinkError> {
    let mut last = None;
    for (i, (url, client)) in servers.iter().enumerate() {
        match client
            .query("SELECT version()")
            .fetch_one::<String>()
            .await
            .map_err(SinkError::at(format!("connection to {url}")))
        {
            Ok(version) => return Ok((i, version)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one server"))
}

/// A ClickHouse string literal.
fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The `(major, minor)` of a ClickHouse version string such as `18.16.1` or `24.8.4.13`.
pub fn server_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// Whether the client can check rows against the table schema (`RowBinaryWithNamesAndTypes`,
/// ClickHouse 24 and later).
pub fn supports_validation(version: &str) -> bool {
    server_version(version).is_some_and(|v| v >= (24, 1))
}

/// Whether the server has column TTL (with `MODIFY COLUMN … REMOVE TTL`) and waits for
/// mutations with `mutations_sync`: 21.8 and later (not ClickHouse 18.16).
pub fn supports_ttl(version: &str) -> bool {
    server_version(version).is_some_and(|v| v >= (21, 8))
}

/// Whether inserts into a plain MergeTree can be deduplicated by
/// `insert_deduplication_token` (ClickHouse 22.2 and later, with the table setting
/// `non_replicated_deduplication_window`).
pub fn supports_dedup_token(version: &str) -> bool {
    server_version(version).is_some_and(|v| v >= (22, 2))
}

/// Whether a block sent again must hash differently (see [`Sink::resends_differ`]): in a
/// cluster (Replicated tables drop a block by its hash) on a server that would then skip
/// the views, which is one without deduplication tokens.
pub fn resends_must_differ(cluster: bool, version: &str) -> bool {
    cluster && !supports_dedup_token(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_features_follow_the_version() {
        assert!(!supports_validation("18.16.1"));
        assert!(supports_validation("24.8.4.13"));
        assert!(supports_validation("25.3.1"));
        assert!(!supports_validation("garbage"));
        assert!(!supports_ttl("18.16.1"));
        assert!(supports_ttl("24.8.14.39"));
        assert!(!supports_dedup_token("18.16.1"));
        assert!(!supports_dedup_token("22.1.3"));
        assert!(supports_dedup_token("22.2.1"));
        assert!(supports_dedup_token("24.8.4.13"));
        assert_eq!(server_version("18.16.1"), Some((18, 16)));
        assert_eq!(server_version("24"), None);
    }

    #[test]
    fn only_an_old_server_in_a_cluster_gets_blocks_sent_again_restamped() {
        assert!(resends_must_differ(true, "18.16.1"));
        assert!(!resends_must_differ(true, "24.8.14.39"));
        assert!(!resends_must_differ(false, "18.16.1"));
        assert!(!resends_must_differ(false, "24.8.14.39"));
    }
}
