//! ClickHouse: connection, start-up migrations, batch inserts, and which failures are
//! worth retrying.

use std::time::Duration;

use clickhouse::Client;
use schemas::migrations::{Migration, MIGRATIONS};

use crate::batch::Batch;
use crate::config::ClickHouseArgs;

/// Why a ClickHouse operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("clickhouse {op} failed: {source}")]
    ClickHouse {
        op: String,
        #[source]
        source: clickhouse::error::Error,
    },
}

impl SinkError {
    fn at(op: impl Into<String>) -> impl FnOnce(clickhouse::error::Error) -> SinkError {
        let op = op.into();
        move |source| SinkError::ClickHouse { op, source }
    }

    /// Whether trying again later may succeed (network, overload, timeouts), as opposed
    /// to the server rejecting the data or the statement itself.
    pub fn is_retryable(&self) -> bool {
        let SinkError::ClickHouse { source, .. } = self;
        match source {
            clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut => true,
            clickhouse::error::Error::BadResponse(body) => !is_permanent_server_error(body),
            _ => false,
        }
    }
}

/// ClickHouse error codes that a retry cannot fix: the data or statement is wrong.
/// 18.16 sends no error-code header, so the code is read from the body (`Code: N.`).
const PERMANENT_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    16,  // NO_SUCH_COLUMN_IN_TABLE
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    33,  // CANNOT_READ_ALL_DATA
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    47,  // UNKNOWN_IDENTIFIER
    53,  // TYPE_MISMATCH
    60,  // UNKNOWN_TABLE
    62,  // SYNTAX_ERROR
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    81,  // UNKNOWN_DATABASE
    117, // INCORRECT_DATA
];

fn is_permanent_server_error(body: &str) -> bool {
    error_code(body).is_some_and(|code| PERMANENT_CODES.contains(&code))
}

/// The `N` of `Code: N.` in a ClickHouse error body.
fn error_code(body: &str) -> Option<u32> {
    let rest = &body[body.find("Code: ")? + 6..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A ClickHouse database the loader writes to.
pub struct Sink {
    client: Client,
    database: String,
}

impl Sink {
    /// Connects, creates the database and applies pending migrations. Row validation by
    /// the client is used only where the server supports it (not on ClickHouse < 24).
    pub async fn connect(args: &ClickHouseArgs) -> Result<Sink, SinkError> {
        let base = Client::default()
            .with_url(&args.url)
            .with_user(&args.user)
            .with_password(&args.password)
            .with_validation(false);
        let version: String = base
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(SinkError::at(format!("connection to {}", args.url)))?;
        let validation = args.validation.enabled_for(&version);
        tracing::info!(server = %version, validation, database = %args.database, "Connected to ClickHouse");
        // Migrations name the database in every statement: the database may not exist yet.
        let sink = Sink {
            client: base,
            database: args.database.clone(),
        };
        sink.migrate().await?;
        Ok(Sink {
            client: sink
                .client
                .with_database(&args.database)
                .with_validation(validation),
            database: sink.database,
        })
    }

    async fn migrate(&self) -> Result<(), SinkError> {
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
        for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            self.apply(migration).await?;
        }
        Ok(())
    }

    async fn apply(&self, migration: &Migration) -> Result<(), SinkError> {
        for statement in migration.statements(&self.database) {
            self.execute(&statement).await?;
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

    async fn execute(&self, sql: &str) -> Result<(), SinkError> {
        let head: String = sql.chars().take(80).collect();
        self.client
            .query(sql)
            .execute()
            .await
            .map_err(SinkError::at(format!("statement `{head}…`")))
    }

    /// Writes a batch, one insert per storage table. Idempotent: writing the same batch
    /// again adds rows the views collapse by event id.
    pub async fn write(&self, batch: &Batch) -> Result<(), SinkError> {
        let t = &batch.tables;
        insert(&self.client, "raw_events_store", &t.raw).await?;
        insert(&self.client, "call_events_store", &t.calls).await?;
        insert(&self.client, "contact_events_store", &t.contacts).await?;
        insert(&self.client, "contact_list_events_store", &t.contact_lists).await?;
        insert(&self.client, "message_events_store", &t.messages).await?;
        insert(&self.client, "dead_letters_store", &t.dead_letters).await?;
        Ok(())
    }
}

async fn insert<T>(client: &Client, table: &str, rows: &[T]) -> Result<(), SinkError>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client
        .insert::<T>(table)
        .await
        .map_err(SinkError::at(format!("insert into {table}")))?
        .with_timeouts(Some(Duration::from_secs(30)), Some(Duration::from_secs(60)));
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
        assert!(!bad_response("Code: 60. DB::Exception: Table x doesn't exist").is_retryable());
        assert!(bad_response("Code: 252. DB::Exception: Too many parts").is_retryable());
        assert!(bad_response("Code: 241. DB::Exception: Memory limit exceeded").is_retryable());
        assert!(bad_response("502 Bad Gateway").is_retryable());
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
