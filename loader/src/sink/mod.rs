//! ClickHouse: the connection, what the server supports, and inserts. The parts:
//! [`error`] (which failures are worth retrying), [`schema`] (migrations), [`blocks`]
//! (the block log), [`lookups`] (what settling a block reads and writes).

mod blocks;
mod error;
mod lookups;
mod schema;

use std::time::Duration;

use clickhouse::Client;
use warehouse::{StoreRow, Table};

use crate::config::{ClickHouseArgs, Switch, WireCompression};

pub use blocks::Block;
pub use error::SinkError;

/// How many recent insert tokens a table remembers, when the server supports tokens.
const DEDUP_WINDOW: u32 = 10_000;

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

    async fn execute(&self, sql: &str) -> Result<(), SinkError> {
        let head: String = sql.chars().take(80).collect();
        self.client
            .query(sql)
            .execute()
            .await
            .map_err(SinkError::at(format!("statement `{head}…`")))
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

/// Whether inserts into a plain MergeTree can be deduplicated by
/// `insert_deduplication_token` (ClickHouse 22.2 and later, with the table setting
/// `non_replicated_deduplication_window`).
pub fn supports_dedup_token(version: &str) -> bool {
    server_version(version).is_some_and(|v| v >= (22, 2))
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
        assert!(!supports_dedup_token("18.16.1"));
        assert!(!supports_dedup_token("22.1.3"));
        assert!(supports_dedup_token("22.2.1"));
        assert!(supports_dedup_token("24.8.4.13"));
        assert_eq!(server_version("18.16.1"), Some((18, 16)));
        assert_eq!(server_version("24"), None);
    }
}
