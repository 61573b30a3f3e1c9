//! ClickHouse: connection, what the server supports, start-up migrations, the block log,
//! inserts, and which failures are worth retrying.

use std::time::Duration;

use clickhouse::Client;
use warehouse::migrations::{adds_a_column, Migration, MIGRATIONS};
use warehouse::resolve::EntityKeyRow;
use warehouse::{StoreRow, Table};

use std::collections::BTreeMap;

use crate::batch::Segment;
use crate::block::{self, Recorded};
use crate::config::{ClickHouseArgs, Switch, WireCompression};
use crate::consume::TopicPartition;

/// What `loader_blocks` records of a block: its name, its ranges, its rows' loaded_at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block<'a> {
    pub name: &'a str,
    pub segments: &'a BTreeMap<i32, Segment>,
    pub loaded_at_ms: u64,
}

/// Why a ClickHouse operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("clickhouse {op} failed: {source}")]
    ClickHouse {
        op: String,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("mutation of {table} not done after {waited_s} s: see system.mutations")]
    MutationPending { table: String, waited_s: u64 },
    #[error(
        "database {database} has schema version {found}, newer than this loader knows ({known}): \
         run the loader version that wrote it (or a newer one), or point CLICKHOUSE_DATABASE \
         at another database"
    )]
    SchemaTooNew {
        database: String,
        found: u32,
        known: u32,
    },
}

impl SinkError {
    fn at(op: impl Into<String>) -> impl FnOnce(clickhouse::error::Error) -> SinkError {
        let op = op.into();
        move |source| SinkError::ClickHouse { op, source }
    }

    pub(crate) fn server_code(&self) -> Option<u32> {
        match self {
            SinkError::ClickHouse {
                source: clickhouse::error::Error::BadResponse(body),
                ..
            } => error_code(body),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (network, overload, timeouts), as opposed
    /// to the server rejecting the data or the statement itself.
    pub fn is_retryable(&self) -> bool {
        let SinkError::ClickHouse { source, .. } = self else {
            return false;
        };
        match source {
            clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut => true,
            clickhouse::error::Error::BadResponse(_) => !self
                .server_code()
                .is_some_and(|code| BAD_DATA_CODES.contains(&code) || SCHEMA_CODES.contains(&code)),
            _ => false,
        }
    }

    /// Whether an `ADD COLUMN` failed because the column exists.
    fn is_existing_column(&self) -> bool {
        match self.server_code() {
            Some(DUPLICATE_COLUMN) => true,
            Some(ILLEGAL_COLUMN) => self.to_string().contains("already exists"),
            _ => false,
        }
    }

    /// Whether the server refused some of the rows for their values: the other rows of
    /// the insert can go in without them.
    pub fn is_bad_data(&self) -> bool {
        self.server_code()
            .is_some_and(|code| BAD_DATA_CODES.contains(&code))
    }
}

/// ClickHouse error codes for values the server refuses: retrying cannot help, and the
/// rows at fault are set aside.
const BAD_DATA_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO (a throwIf check, before constraints)
    469, // VIOLATED_CONSTRAINT
];

/// ClickHouse error codes for a statement that does not fit the tables: every row would
/// fail, so it is a deployment problem to fix, not data to set aside.
const SCHEMA_CODES: &[u32] = &[
    16, // NO_SUCH_COLUMN_IN_TABLE
    33, // CANNOT_READ_ALL_DATA (RowBinary rows of another shape)
    47, // UNKNOWN_IDENTIFIER
    60, // UNKNOWN_TABLE
    62, // SYNTAX_ERROR
    81, // UNKNOWN_DATABASE
];

/// `DUPLICATE_COLUMN`: an `ADD COLUMN` of a column that exists (current servers).
const DUPLICATE_COLUMN: u32 = 15;
/// `ILLEGAL_COLUMN`: what ClickHouse 18.16 answers to the same.
const ILLEGAL_COLUMN: u32 = 44;

/// The `N` of `Code: N.` in a ClickHouse error body (18.16 sends no error-code header).
fn error_code(body: &str) -> Option<u32> {
    let rest = &body[body.find("Code: ")? + 6..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// How many recent insert tokens a table remembers, when the server supports tokens.
const DEDUP_WINDOW: u32 = 10_000;

/// A row of `loader_blocks`: one range of a block.
#[derive(Debug, Clone, clickhouse::Row, serde::Serialize, serde::Deserialize)]
struct BlockRow {
    consumer_group: String,
    topic: String,
    partition: i32,
    epoch: u32,
    first_offset: i64,
    last_offset: i64,
    first_record: u64,
    loaded_at_ms: u64,
    block: String,
    done: u8,
    recorded_at: u32,
}

/// What `loader_blocks` says of a range.
#[derive(Debug, Clone, clickhouse::Row, serde::Deserialize)]
struct RecordedRow {
    epoch: u32,
    first_offset: i64,
    last_offset: i64,
    first_record: u64,
    loaded_at_ms: u64,
    block: String,
    done: u8,
}

/// A ClickHouse database the loader writes to.
pub struct Sink {
    client: Client,
    database: String,
    /// Inserts carry `insert_deduplication_token`: the server has them (ClickHouse 22.2
    /// and later) and the block log is on. Without the block log a token would name only
    /// offsets, and could collide with an older block's after Kafka's offsets restart.
    pub dedup_tokens: bool,
    /// Every insert's offset range is recorded in `loader_blocks` first.
    pub block_log: bool,
    /// The database's schema version once migrated.
    version: u32,
    /// Inserts ask for `async_insert=0`: a block must be its own insert, acknowledged
    /// once written (servers that know the setting; current ones may default it to 1).
    sync_inserts: bool,
    /// The server has column TTL and `mutations_sync` (see [`supports_ttl`]).
    pub ttl: bool,
}

impl Sink {
    /// Connects, creates the database, applies pending migrations and picks the
    /// exactly-once mode the server supports, which it logs. Row validation by the
    /// client is used only where the server supports it (not on ClickHouse < 24).
    pub async fn connect(args: &ClickHouseArgs, block_log: Switch) -> Result<Sink, SinkError> {
        let base = Client::default()
            .with_url(&args.url)
            .with_user(&args.user)
            .with_password(&args.password)
            .with_validation(false)
            .with_compression(match args.compression {
                WireCompression::None => clickhouse::Compression::None,
                WireCompression::Lz4 => clickhouse::Compression::Lz4,
            });
        let version: String = base
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(SinkError::at(format!("connection to {}", args.url)))?;
        let validation = args.validation.resolve(supports_validation(&version));
        let has_tokens = supports_dedup_token(&version);
        let block_log = block_log.resolve(has_tokens);
        // Migrations name the database in every statement: the database may not exist yet.
        let sink = Sink {
            client: base,
            database: args.database.clone(),
            dedup_tokens: has_tokens && block_log,
            block_log,
            sync_inserts: has_tokens,
            ttl: supports_ttl(&version),
            version: 0,
        };
        let schema_version = sink.migrate().await?;
        if has_tokens {
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
            validation,
            database = %args.database,
            exactly_once = match (has_tokens, sink.dedup_tokens) {
                (true, true) => "insert deduplication tokens per recorded block, and views merged by event id",
                (true, false) => "views merged by event id (LOADER_BLOCK_LOG=off: no insert deduplication tokens)",
                _ => "views merged by event id (this server has no insert deduplication tokens)",
            },
            block_log = sink.block_log,
            "Connected to ClickHouse"
        );
        Ok(Sink {
            client: sink
                .client
                .with_database(&args.database)
                .with_validation(validation),
            version: schema_version,
            ..sink
        })
    }

    /// The database's schema version (its newest migration applied).
    pub fn schema_version(&self) -> u32 {
        self.version
    }

    /// Applies the migrations the database has not seen; returns its schema version.
    async fn migrate(&self) -> Result<u32, SinkError> {
        let db = &self.database;
        self.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
            .await?;
        self.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations \
             (version UInt32, name String, applied_at DateTime('UTC') DEFAULT now()) \
             ENGINE = MergeTree ORDER BY version"
        ))
        .await?;
        let applied: Vec<u32> = self
            .client
            .query(&format!("SELECT version FROM {db}.schema_migrations"))
            .fetch_all()
            .await
            .map_err(SinkError::at("reading schema_migrations"))?;
        let known = MIGRATIONS.last().map_or(0, |m| m.version);
        if let Some(&found) = applied.iter().max().filter(|&&v| v > known) {
            return Err(SinkError::SchemaTooNew {
                database: db.clone(),
                found,
                known,
            });
        }
        for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            self.apply(migration).await?;
        }
        Ok(known)
    }

    async fn apply(&self, migration: &Migration) -> Result<(), SinkError> {
        for statement in migration.statements(&self.database) {
            match self.execute(&statement).await {
                // Applied before this migration was interrupted (see `adds_a_column`).
                Err(e) if adds_a_column(&statement) && e.is_existing_column() => {}
                result => result?,
            }
        }
        self.client
            .query(&format!(
                "INSERT INTO {}.schema_migrations (version, name) VALUES (?, ?)",
                self.database
            ))
            .bind(migration.version)
            .bind(migration.name)
            .execute()
            .await
            .map_err(SinkError::at(format!(
                "recording migration {}",
                migration.version
            )))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "Applied migration"
        );
        Ok(())
    }

    /// The database the tables live in.
    pub fn database(&self) -> &str {
        &self.database
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) async fn execute(&self, sql: &str) -> Result<(), SinkError> {
        let head: String = sql.chars().take(80).collect();
        self.client
            .query(sql)
            .execute()
            .await
            .map_err(SinkError::at(format!("statement `{head}…`")))
    }

    /// The range recorded (last) as starting at `first_offset` of a partition, if any,
    /// and the partition's newest epoch.
    pub async fn recorded_range(
        &self,
        group: &str,
        tp: &TopicPartition,
        first_offset: i64,
    ) -> Result<(Option<Recorded>, u32), SinkError> {
        let range: Option<RecordedRow> = self
            .client
            .query(
                "SELECT epoch, first_offset, last_offset, first_record, loaded_at_ms, block, done \
                 FROM loader_blocks FINAL \
                 WHERE consumer_group = ? AND topic = ? AND partition = ? AND first_offset = ? \
                 ORDER BY epoch DESC LIMIT 1",
            )
            .bind(group)
            .bind(&tp.topic)
            .bind(tp.partition)
            .bind(first_offset)
            .fetch_optional()
            .await
            .map_err(SinkError::at("reading loader_blocks"))?;
        let max_epoch: u32 = self
            .client
            .query(
                "SELECT max(epoch) FROM loader_blocks \
                 WHERE consumer_group = ? AND topic = ? AND partition = ?",
            )
            .bind(group)
            .bind(&tp.topic)
            .bind(tp.partition)
            .fetch_one()
            .await
            .map_err(SinkError::at("reading loader_blocks"))?;
        let range = range.map(|r| {
            // Ranges recorded before blocks had names were blocks of their own.
            let block = if r.block.is_empty() {
                let segment = Segment {
                    epoch: r.epoch,
                    first: r.first_offset,
                    last: r.last_offset,
                    first_record: r.first_record,
                };
                block::name(group, &tp.topic, &BTreeMap::from([(tp.partition, segment)]))
            } else {
                r.block
            };
            Recorded {
                epoch: r.epoch,
                last_offset: r.last_offset,
                first_record: r.first_record,
                loaded_at_ms: r.loaded_at_ms,
                block,
                done: r.done != 0,
            }
        });
        Ok((range, max_epoch))
    }

    /// Per partition, the last offset of each range of the recorded block `name`.
    pub async fn block_ranges(
        &self,
        group: &str,
        topic: &str,
        name: &str,
    ) -> Result<BTreeMap<i32, i64>, SinkError> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Range {
            partition: i32,
            last_offset: i64,
        }
        let ranges: Vec<Range> = self
            .client
            .query(
                "SELECT partition, last_offset FROM loader_blocks FINAL \
                 WHERE consumer_group = ? AND topic = ? AND block = ?",
            )
            .bind(group)
            .bind(topic)
            .bind(name)
            .fetch_all()
            .await
            .map_err(SinkError::at("reading loader_blocks"))?;
        Ok(ranges
            .into_iter()
            .map(|r| (r.partition, r.last_offset))
            .collect())
    }

    /// Records that the offsets `first_offset..=last_offset` of a partition are about to
    /// be inserted as one block.
    pub async fn record_block(
        &self,
        group: &str,
        topic: &str,
        block: &Block<'_>,
        done: bool,
    ) -> Result<(), SinkError> {
        let recorded_at = u32::try_from(runtime::now_ms() / 1000).unwrap_or(u32::MAX);
        let rows: Vec<BlockRow> = block
            .segments
            .iter()
            .map(|(partition, s)| BlockRow {
                consumer_group: group.to_owned(),
                topic: topic.to_owned(),
                partition: *partition,
                epoch: s.epoch,
                first_offset: s.first,
                last_offset: s.last,
                first_record: s.first_record,
                loaded_at_ms: block.loaded_at_ms,
                block: block.name.to_owned(),
                done: u8::from(done),
                recorded_at,
            })
            .collect();
        self.insert_into("loader_blocks", &rows, None).await
    }

    /// The first receipt of every event received since `since_s` (Unix seconds), at
    /// most `limit` of the newest.
    pub async fn recent_receipts(
        &self,
        since_s: u32,
        limit: usize,
    ) -> Result<Vec<(String, String, u64)>, SinkError> {
        self.client
            .query(&format!(
                "SELECT tenant, event_id, min(received_at_ms) AS first FROM {} \
                 WHERE received_at >= toDateTime(?) GROUP BY tenant, event_id \
                 ORDER BY first DESC LIMIT {limit}",
                Table::RawEvents.name()
            ))
            .bind(since_s)
            .fetch_all()
            .await
            .map_err(SinkError::at("reading recent receipts"))
    }

    /// The days `entity_keys` holds for some entities of one tenant and kind.
    pub async fn key_days(
        &self,
        tenant: &str,
        entity: &str,
        ids: &[&str],
    ) -> Result<Vec<(String, u16)>, SinkError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // A literal list: 18.16 uses the primary key for `IN (…)`, not for has(?, …).
        let list: Vec<String> = ids.iter().map(|id| warehouse::states::quote(id)).collect();
        self.client
            .query(&format!(
                "SELECT entity_id, argMin(key_day, (first_received_at_ms, key_day)) AS day \
                 FROM entity_keys WHERE tenant = ? AND entity = ? AND entity_id IN ({}) \
                 GROUP BY entity_id",
                list.join(",")
            ))
            .bind(tenant)
            .bind(entity)
            .fetch_all()
            .await
            .map_err(SinkError::at("reading entity_keys"))
    }

    /// Stores new entity keys, before the rows that use them.
    pub async fn insert_keys(
        &self,
        keys: &[EntityKeyRow],
        token: Option<&str>,
    ) -> Result<(), SinkError> {
        self.insert_into("entity_keys", keys, token).await
    }

    /// Records an erasure in its audit table.
    pub async fn insert_audit(&self, row: &warehouse::erasure::AuditRow) -> Result<(), SinkError> {
        self.insert_into("erasures", std::slice::from_ref(row), None)
            .await
    }

    /// Inserts `rows` into their table, with `token` as the insert's deduplication token.
    pub async fn insert<T>(&self, rows: &[T], token: Option<&str>) -> Result<(), SinkError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite + StoreRow,
    {
        self.insert_into(T::TABLE.name(), rows, token).await
    }

    async fn insert_into<T>(
        &self,
        table: &str,
        rows: &[T],
        token: Option<&str>,
    ) -> Result<(), SinkError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<T>(table)
            .await
            .map_err(SinkError::at(format!("insert into {table}")))?
            .with_timeouts(Some(Duration::from_secs(30)), Some(Duration::from_secs(60)));
        if self.sync_inserts {
            insert = insert.with_setting("async_insert", "0");
        }
        if let Some(token) = token {
            insert = insert.with_setting("insert_deduplication_token", token);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_response(body: &str) -> SinkError {
        SinkError::ClickHouse {
            op: "insert".into(),
            source: clickhouse::error::Error::BadResponse(body.into()),
        }
    }

    #[test]
    fn reads_the_error_code_from_the_body() {
        assert_eq!(
            error_code("Code: 53. DB::Exception: Type mismatch"),
            Some(53)
        );
        assert_eq!(
            error_code("Code: 241, e.displayText() = DB::Exception: Memory limit"),
            Some(241)
        );
        assert_eq!(error_code("nothing here"), None);
    }

    #[test]
    fn bad_data_is_permanent_and_overload_is_retryable() {
        assert!(!bad_response("Code: 53. DB::Exception: Type mismatch").is_retryable());
        assert!(bad_response("Code: 53. DB::Exception: Type mismatch").is_bad_data());
        assert!(bad_response("Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero").is_bad_data());
        assert!(!bad_response("Code: 60. DB::Exception: Table x doesn't exist").is_retryable());
        assert!(!bad_response("Code: 60. DB::Exception: Table x doesn't exist").is_bad_data());
        assert!(bad_response("Code: 252. DB::Exception: Too many parts").is_retryable());
        assert!(bad_response("Code: 241. DB::Exception: Memory limit exceeded").is_retryable());
        assert!(bad_response("502 Bad Gateway").is_retryable());
    }

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
    fn an_existing_column_is_told_apart_on_both_versions() {
        assert!(bad_response("Code: 15. DB::Exception: Cannot add column x: column with this name already exists. (DUPLICATE_COLUMN)").is_existing_column());
        assert!(bad_response("Code: 44, e.displayText() = DB::Exception: Cannot add column http_status: column with this name already exists").is_existing_column());
        assert!(
            !bad_response("Code: 44, e.displayText() = DB::Exception: Cannot convert column")
                .is_existing_column()
        );
    }

    #[test]
    fn network_failures_and_timeouts_are_retryable() {
        let timed_out = SinkError::ClickHouse {
            op: "insert".into(),
            source: clickhouse::error::Error::TimedOut,
        };
        assert!(timed_out.is_retryable());
    }
}
