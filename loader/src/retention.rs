//! Retention of personal texts (`RETENTION_*_DAYS`; see `warehouse::retention`).
//!
//! On servers with column TTL the loader sets the TTLs at start when they differ from
//! the settings (a change makes the server rewrite the column once, in the background),
//! and the server empties old values at its merges. ClickHouse 18.16 has no TTL:
//! `loader retention --apply` empties them with mutations and rebuilds the state days
//! that still hold them; run it daily (cron, or a one-shot service on a timer).

use tokio_util::sync::CancellationToken;
use warehouse::retention::{Expiring, Retention};

use crate::sink::{Sink, SinkError};
use crate::{Config, RunError};

/// `loader retention`.
#[derive(clap::Args, Debug, Clone)]
pub struct RetentionCommand {
    /// Apply the settings; without it, only show what they would do.
    #[arg(long)]
    pub apply: bool,
}

/// What retention found (and did) for one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub table: &'static str,
    pub column: &'static str,
    pub days: u32,
    /// What the server holds now: the column's TTL, or the expired rows (per-event
    /// tables) or days (states) that still hold text.
    pub found: String,
    /// What was done, if anything.
    pub done: String,
}

/// A column's TTL as the server reports it (`DESCRIBE TABLE`).
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Described {
    name: String,
    #[serde(rename = "type")]
    _type: String,
    #[serde(rename = "default_type")]
    _default_type: String,
    #[serde(rename = "default_expression")]
    _default_expression: String,
    #[serde(rename = "comment")]
    _comment: String,
    #[serde(rename = "codec_expression")]
    _codec_expression: String,
    ttl_expression: String,
}

/// Sets every column TTL that differs from `settings` (servers with TTL only); returns
/// what each column has. Idempotent: a TTL already in place is not set again.
pub async fn apply_ttls(sink: &Sink, settings: Retention) -> Result<Vec<Line>, SinkError> {
    let mut lines = Vec::new();
    for column in settings.columns() {
        let current = ttl_of(sink, &column).await?;
        let wanted = column.ttl().unwrap_or_default();
        let done = if current == wanted {
            String::new()
        } else {
            sink.execute(&column.alter_ttl(sink.database())).await?;
            tracing::info!(
                table = column.table,
                column = column.column,
                days = column.days,
                "Retention TTL set"
            );
            format!("TTL set to `{wanted}`")
        };
        lines.push(Line {
            table: column.table,
            column: column.column,
            days: column.days,
            found: if current.is_empty() {
                "no TTL".to_owned()
            } else {
                format!("TTL `{current}`")
            },
            done,
        });
    }
    Ok(lines)
}

async fn ttl_of(sink: &Sink, column: &Expiring) -> Result<String, SinkError> {
    let described: Vec<Described> = sink
        .client()
        .query(&format!(
            "DESCRIBE TABLE {}.{}",
            sink.database(),
            column.table
        ))
        .fetch_all()
        .await
        .map_err(|source| SinkError::ClickHouse {
            op: format!("describing {}", column.table),
            source,
        })?;
    Ok(described
        .into_iter()
        .find(|d| d.name == column.column)
        .map(|d| d.ttl_expression)
        .unwrap_or_default())
}

/// Empties expired values with mutations (servers without TTL): per-event columns by
/// `UPDATE`, states by rebuilding their expired days that still hold something.
pub async fn apply_mutations(
    sink: &Sink,
    settings: Retention,
    now_s: i64,
    apply: bool,
) -> Result<Vec<Line>, SinkError> {
    let db = sink.database().to_owned();
    let mut lines = Vec::new();
    for column in settings.columns() {
        let mut line = Line {
            table: column.table,
            column: column.column,
            days: column.days,
            found: "kept for ever".to_owned(),
            done: String::new(),
        };
        if let (Some(expired), None) = (column.expired(now_s), column.state) {
            let filter = format!("{expired} AND {} != ''", column.column);
            let rows = sink.count(column.table, &filter).await?;
            line.found = format!("{rows} expired rows hold text");
            if apply && rows > 0 {
                if let Some(clear) = column.clear(&db, now_s) {
                    sink.mutate(&clear).await?;
                    line.done = format!("emptied {rows} rows");
                }
            }
        }
        if let Some(query) = column.stale_days(&db, now_s) {
            let days = sink.strings(&query).await?;
            line.found = format!("{} expired days hold text", days.len());
            if apply && !days.is_empty() {
                if let Some(rebuild) = column.rebuild(&db, &days) {
                    sink.rebuild(&rebuild).await?;
                    line.done = format!("rebuilt {} days", days.len());
                }
            }
        }
        lines.push(line);
    }
    Ok(lines)
}

/// `loader retention [--apply]`.
pub async fn run(
    config: &Config,
    command: &RetentionCommand,
    shutdown: &CancellationToken,
) -> Result<Vec<Line>, RunError> {
    if !config.clickhouse.cluster.is_empty() {
        return Err(RunError::NotInCluster(
            "retention",
            "Retention of personal data",
        ));
    }
    let Some(sink) = crate::connect(config, crate::sink::Schema::Migrate, shutdown).await? else {
        return Ok(Vec::new());
    };
    let settings = config.retention.settings();
    let lines = if sink.ttl {
        if command.apply {
            apply_ttls(&sink, settings).await?
        } else {
            let mut lines = Vec::new();
            for column in settings.columns() {
                let current = ttl_of(&sink, &column).await?;
                let wanted = column.ttl().unwrap_or_default();
                lines.push(Line {
                    table: column.table,
                    column: column.column,
                    days: column.days,
                    found: format!("TTL `{current}`"),
                    done: if current == wanted {
                        String::new()
                    } else {
                        format!("would set `{wanted}`")
                    },
                });
            }
            lines
        }
    } else {
        // Mutations before the state rebuilds: a state is rebuilt from the per-event
        // rows, which must be emptied first (`columns` lists the stores first).
        apply_mutations(&sink, settings, runtime::now_ms() / 1000, command.apply).await?
    };
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[tokio::test]
    async fn refuses_a_cluster_before_it_touches_anything() {
        // The server at this URL does not exist: the refusal must come first.
        let config = Config::try_parse_from([
            "loader",
            "--clickhouse-cluster",
            "switchboard",
            "--clickhouse-url",
            "http://127.0.0.1:9",
            "retention",
            "--apply",
        ])
        .unwrap();
        let Some(crate::config::Command::Retention(command)) = &config.command else {
            panic!("no retention");
        };
        let error = run(&config, command, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(error, RunError::NotInCluster("retention", _)),
            "{error}"
        );
    }
}
