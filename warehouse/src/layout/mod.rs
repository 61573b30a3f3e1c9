//! Where the tables live, chosen in one place: on one ClickHouse server
//! ([`Layout::Single`], the migrations as written) or on a cluster of shards and replicas
//! ([`Layout::Cluster`]), whose statements are derived here from the same migration
//! files, mechanically, so no DDL is written twice and no migration names an engine per
//! deployment.
//!
//! In a cluster every table `T` a migration creates becomes `T_local` (a Replicated
//! engine on every server, one copy per shard) and `T`, a Distributed table over it with
//! the shard key of [`placement`]. `T` keeps meaning "all the data", so views, the
//! analytics SQL, the dashboards and the loader's inserts keep their table names. The
//! rules, and the measurements behind each: scripts/cluster/README.md. The reference
//! implementation the golden test compares with: scripts/cluster/cluster_ddl.py.
//!
//! Pure: statements in, statements out. Running them (ON CLUSTER, once, recorded) is the
//! loader's `migrate` command.

mod rewrite;
mod sql;

use crate::migrations::{is_valid_database_name, Migration, MIGRATIONS};
use crate::table::Table;

/// Where the tables live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One server: the migrations as written.
    Single,
    /// The servers of the ClickHouse cluster `name` (`remote_servers` in their
    /// configuration): Replicated engines, ON CLUSTER DDL, Distributed tables.
    Cluster { name: String },
}

/// Suffix of the per-shard table behind a Distributed table.
pub const LOCAL_SUFFIX: &str = "_local";

/// `replicated_deduplication_window` of every replicated table: how many recent blocks
/// a shard remembers per table, so that a block the loader writes again after a crash
/// is dropped. A redo is recognised only if fewer than this many inserts went into that
/// table on that shard since the original: with one insert per table per loader per
/// flush (`LOADER_BATCH_MAX_AGE_MS`, 1 s) plus bad-row splits, 10,000 covers twelve
/// loaders for about 14 minutes, far more than a restart and a rebalance take. Cost: one
/// ~100-byte ZooKeeper node per remembered block, per table and shard. 18.16 cannot
/// change it on an existing table (no `MODIFY SETTING`).
pub const REPLICATED_DEDUP_WINDOW: u64 = 10_000;

/// How a table's rows are placed on the servers of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Spread over the shards by this sharding expression (each shard replicated).
    Sharded(&'static str),
    /// A full copy on every server, whatever its shard.
    EveryServer,
}

/// Shard keys of the tables migrations create besides the storage tables of [`Table`]
/// (which answer [`Table::shard_key`]). Same rule: a function of the table's ORDER BY
/// columns, and of (tenant, entity id) for entity data.
const OTHER_SHARD_KEYS: &[(&str, &str)] = &[
    // Block-log reads go by group, topic and partition: one shard answers them.
    (
        "loader_blocks",
        "cityHash64(consumer_group, topic, partition)",
    ),
    // The per-event tables of 0001/0002, kept for the backfill of 0007: as their
    // successors in `Table`.
    ("raw_events_store", "cityHash64(tenant, event_id)"),
    ("call_events_store", "cityHash64(tenant, call_id)"),
    ("contact_events_store", "cityHash64(tenant, contact_id)"),
    ("contact_list_events_store", "cityHash64(tenant, list_id)"),
    ("message_events_store", "cityHash64(tenant, message_id)"),
    (
        "dead_letters_store",
        "cityHash64(stage, source_topic, source_partition, source_offset)",
    ),
    // The day of each entity: read back by the loader with a GROUP BY over all shards.
    ("entity_keys", "cityHash64(tenant, entity_id)"),
    // Aggregate states are written by materialized views, which fire on the shard that
    // received the insert: their keys name the shard of the events that feed them, for
    // the rare direct insert (a backfill) to agree.
    ("calls_state", "cityHash64(tenant, call_id)"),
    ("contacts_state", "cityHash64(tenant, contact_id)"),
    ("contact_lists_state", "cityHash64(tenant, list_id)"),
    ("messages_state", "cityHash64(tenant, message_id)"),
    // Fed by a view over raw_events_store_v2, so its rows sit on the shard of their raw
    // event, whatever this key says: a (tenant, day) can be on several shards, and
    // readers take DISTINCT of it, never FINAL.
    ("tenant_days", "cityHash64(tenant, day)"),
    // 0008: fed by a view over unmapped_fields_store (by delivery), so, like
    // tenant_days, its rows sit on the shard of the delivery, whatever this key says: a
    // path's states may be on several shards, and the reader view merges them.
    (
        "unmapped_fields_state",
        "cityHash64(tenant, event, kind, path)",
    ),
    // 0009: the audit of erasures.
    ("erasures", "cityHash64(tenant, request_id)"),
];

/// The loader's record of applied migrations (not created by a migration file).
pub const SCHEMA_MIGRATIONS: &str = "schema_migrations";

/// How the rows of `table` are placed in a cluster; `None` for a table nobody declared,
/// which the rewrite refuses (a new migration must name its tables' keys here).
pub fn placement(table: &str) -> Option<Placement> {
    if table == SCHEMA_MIGRATIONS {
        return Some(Placement::EveryServer);
    }
    Table::ALL
        .iter()
        .find(|t| t.name() == table)
        .map(|t| t.shard_key())
        .or_else(|| {
            OTHER_SHARD_KEYS
                .iter()
                .find(|(name, _)| *name == table)
                .map(|(_, key)| *key)
        })
        .map(Placement::Sharded)
}

/// A statement or setting the cluster rewrite cannot turn into cluster statements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("CLICKHOUSE_CLUSTER {0:?} is not a plain name: use [A-Za-z_][A-Za-z0-9_]*")]
    BadClusterName(String),
    #[error("no cluster rule for statement `{0}`")]
    UnknownStatement(String),
    #[error(
        "table {table}: engine {engine} has no replicated form (only the MergeTree family has)"
    )]
    NotReplicable { table: String, engine: String },
    #[error("table {0}: no ORDER BY after the engine (old MergeTree syntax has no cluster rule)")]
    NoOrderBy(String),
    #[error("table {0} has no shard key: declare it in warehouse/src/layout/mod.rs (OTHER_SHARD_KEYS) or Table::shard_key")]
    NoShardKey(String),
    #[error("materialized view {0} has no TO table: its inner table would be neither replicated nor sharded")]
    ViewWithoutTarget(String),
    #[error("materialized view {view} writes to {target}, which no migration created as a sharded table")]
    ViewTargetNotSharded { view: String, target: String },
    #[error("materialized view {0} reads no sharded table: over a Distributed table it would fire on one server for every shard")]
    ViewSourceNotSharded(String),
    #[error("ALTER of {0}, which no migration created as a table")]
    AlterOfUnknownTable(String),
    #[error("ALTER of {table}: no cluster rule for `{clause}`")]
    UnknownAlter { table: String, clause: String },
}

impl Layout {
    /// The layout `CLICKHOUSE_CLUSTER` names: empty for one server.
    pub fn from_cluster_setting(cluster: &str) -> Result<Layout, LayoutError> {
        match cluster.trim() {
            "" => Ok(Layout::Single),
            name if is_valid_database_name(name) => Ok(Layout::Cluster {
                name: name.to_owned(),
            }),
            name => Err(LayoutError::BadClusterName(name.to_owned())),
        }
    }

    /// The cluster's name, if any.
    pub fn cluster(&self) -> Option<&str> {
        match self {
            Layout::Single => None,
            Layout::Cluster { name } => Some(name),
        }
    }

    /// The statement that creates `database`.
    pub fn create_database(&self, database: &str) -> String {
        match self {
            Layout::Single => format!("CREATE DATABASE IF NOT EXISTS {database}"),
            Layout::Cluster { name } => {
                format!("CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {name}")
            }
        }
    }

    /// The statement that creates the loader's `schema_migrations`. In a cluster it is
    /// one table replicated to every server (its ZooKeeper path has no shard), so each
    /// loader reads the schema version from the server it talks to; it has no server
    /// default: `applied_at` is sent by the client, so a record sent again is the same
    /// block and is dropped, and ReplacingMergeTree keeps one row per version when two
    /// `migrate` runs race.
    pub fn schema_migrations(&self, database: &str) -> String {
        match self {
            Layout::Single => format!(
                "CREATE TABLE IF NOT EXISTS {database}.{SCHEMA_MIGRATIONS} \
                 (version UInt32, name String, applied_at DateTime('UTC') DEFAULT now()) \
                 ENGINE = MergeTree ORDER BY version"
            ),
            Layout::Cluster { name } => format!(
                "CREATE TABLE IF NOT EXISTS {database}.{SCHEMA_MIGRATIONS} ON CLUSTER {name}\n\
                 (version UInt32, name String, applied_at DateTime('UTC'))\n\
                 ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}.{SCHEMA_MIGRATIONS}', '{{replica}}', applied_at)\n\
                 ORDER BY version"
            ),
        }
    }

    /// Every migration with its statements for `database` in this layout, in the order
    /// they must be applied. In a cluster the statements of a migration depend on the
    /// ones before it (the columns of a table an ALTER changes), so all are derived, and
    /// the caller applies those the database has not recorded. `database` must be a
    /// plain identifier.
    pub fn migrations(
        &self,
        database: &str,
    ) -> Result<Vec<(&'static Migration, Vec<String>)>, LayoutError> {
        let statements = MIGRATIONS.iter().map(|m| (m, m.statements(database)));
        match self {
            Layout::Single => Ok(statements.collect()),
            Layout::Cluster { name } => {
                let mut rewriter = rewrite::Rewriter::new(database, name);
                statements
                    .map(|(m, list)| Ok((m, rewriter.rewrite_all(&list)?)))
                    .collect()
            }
        }
    }

    /// The table that holds `table`'s rows on the server asked (for checks that look at
    /// one server or shard: merges, parts, placement).
    pub fn local_table(&self, table: &str) -> String {
        match self {
            Layout::Single => table.to_owned(),
            Layout::Cluster { .. } => format!("{table}{LOCAL_SUFFIX}"),
        }
    }
}

#[cfg(test)]
mod tests;
