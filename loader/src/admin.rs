//! What the loader's commands (`erase`, `retention`) run over stored data: mutations
//! that are waited for, state rebuilds, and small reads.

use std::time::{Duration, Instant};

use crate::sink::{Sink, SinkError};

/// How long a mutation may take before the command gives up waiting.
const MUTATION_PATIENCE: Duration = Duration::from_secs(600);

impl Sink {
    /// Runs a mutation (`ALTER TABLE db.t UPDATE|DELETE …`) and returns once the server
    /// has applied it to every part: with `mutations_sync = 2` where the server has it,
    /// else (ClickHouse 18.16) by polling `system.mutations` for the table.
    pub async fn mutate(&self, sql: &str) -> Result<(), SinkError> {
        let head: String = sql.chars().take(100).collect();
        let op = || format!("mutation `{head}…`");
        let mut query = self.client().query(sql);
        if self.ttl {
            query = query.with_setting("mutations_sync", "2");
        }
        query
            .execute()
            .await
            .map_err(|source| SinkError::ClickHouse { op: op(), source })?;
        if self.ttl {
            return Ok(());
        }
        let table = sql
            .strip_prefix("ALTER TABLE ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|name| name.split_once('.'))
            .map(|(_, table)| table.to_owned())
            .unwrap_or_default();
        let deadline = Instant::now() + MUTATION_PATIENCE;
        loop {
            let pending: u64 = self
                .client()
                .query(
                    "SELECT count() FROM system.mutations \
                     WHERE database = ? AND table = ? AND is_done = 0",
                )
                .bind(self.database())
                .bind(&table)
                .fetch_one()
                .await
                .map_err(|source| SinkError::ClickHouse { op: op(), source })?;
            if pending == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SinkError::MutationPending {
                    table,
                    waited_s: MUTATION_PATIENCE.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Rebuilds a part of an aggregate state: the delete mutation (waited for), then the
    /// insert (see `warehouse::states`).
    pub async fn rebuild(&self, [delete, insert]: &[String; 2]) -> Result<(), SinkError> {
        self.mutate(delete).await?;
        self.execute(insert).await
    }

    /// The first column of every row of `sql`, as text.
    pub async fn strings(&self, sql: &str) -> Result<Vec<String>, SinkError> {
        self.client()
            .query(sql)
            .fetch_all()
            .await
            .map_err(|source| SinkError::ClickHouse {
                op: format!("query `{}…`", sql.chars().take(100).collect::<String>()),
                source,
            })
    }

    /// `SELECT count() FROM db.table WHERE filter`.
    pub async fn count(&self, table: &str, filter: &str) -> Result<u64, SinkError> {
        let sql = format!(
            "SELECT count() FROM {}.{table} WHERE {filter}",
            self.database()
        );
        self.client()
            .query(&sql)
            .fetch_one()
            .await
            .map_err(|source| SinkError::ClickHouse {
                op: format!("counting {table}"),
                source,
            })
    }
}
