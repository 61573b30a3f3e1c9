//! Cluster mode of the chaos harness (run by `scripts/cluster-test` against
//! `scripts/cluster-services`): the services get every broker and every ClickHouse
//! server, the topics keep the services' own durability defaults (three replicas, two
//! in sync), the schema is created once by `loader migrate`, the faults SIGKILL one
//! broker and one ClickHouse server, and after the run every row is checked to sit on
//! the shard its shard key names.

use std::collections::BTreeSet;

use anyhow::{bail, Context};
use tests::ClickHouse;
use warehouse::layout::{placement, Placement};
use warehouse::{Layout, Table};

/// Where the pipeline's ClickHouse and Kafka faults go in cluster mode.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ClusterArgs {
    /// Run against the ClickHouse cluster of this name (the loader's
    /// `CLICKHOUSE_CLUSTER`); faults then go to nodes of scripts/cluster-services.
    /// Without it: the development services, one broker and one server.
    #[arg(long)]
    pub(crate) clickhouse_cluster: Option<String>,
    /// Every ClickHouse server of the cluster, comma-separated, server 1 first (the
    /// loader's `CLICKHOUSE_URLS`; the n-th serves shard n in the sharded layout).
    #[arg(long, requires = "clickhouse_cluster")]
    pub(crate) clickhouse_urls: Option<String>,
    /// The broker SIGKILLed for the broker fault, a node of scripts/cluster-services.
    #[arg(long, default_value = "kafka-2", requires = "clickhouse_cluster",
          value_parser = ["kafka-1", "kafka-2", "kafka-3"])]
    pub(crate) kill_broker: String,
    /// The ClickHouse server SIGKILLed for the ClickHouse fault, a node of
    /// scripts/cluster-services.
    #[arg(long, default_value = "clickhouse-2", requires = "clickhouse_cluster",
          value_parser = ["clickhouse-1", "clickhouse-2"])]
    pub(crate) kill_clickhouse: String,
}

impl ClusterArgs {
    pub(crate) fn layout(&self) -> Layout {
        match &self.clickhouse_cluster {
            Some(name) => Layout::Cluster { name: name.clone() },
            None => Layout::Single,
        }
    }

    /// Every server's URL; `first` (CLICKHOUSE_URL) when none were given.
    pub(crate) fn urls(&self, first: &str) -> Vec<String> {
        match &self.clickhouse_urls {
            Some(urls) => urls.split(',').map(|u| u.trim().to_owned()).collect(),
            None => vec![first.to_owned()],
        }
    }

    /// The settings every service gets for this layout: a single broker says so; a
    /// cluster keeps the services' defaults, which are a three-broker cluster's.
    pub(crate) fn kafka_env(&self) -> Vec<(&'static str, String)> {
        match self.clickhouse_cluster {
            Some(_) => Vec::new(),
            None => tests::single_broker_env(),
        }
    }

    /// The loader's extra settings in cluster mode.
    pub(crate) fn loader_env(&self, first: &str) -> Vec<(&'static str, String)> {
        match &self.clickhouse_cluster {
            Some(name) => vec![
                ("CLICKHOUSE_CLUSTER", name.clone()),
                ("CLICKHOUSE_URLS", self.urls(first).join(",")),
            ],
            None => Vec::new(),
        }
    }

    /// The flags of `scripts/cluster-test` that pick this run's faults.
    pub(crate) fn fault_flags(&self) -> String {
        format!(
            " --kill-broker {} --kill-clickhouse {}",
            self.kill_broker, self.kill_clickhouse
        )
    }
}

/// Checks that `loader migrate` laid the schema out for the cluster on every server:
/// each storage table Distributed over a Replicated local table. A loader that does not
/// know `CLICKHOUSE_CLUSTER` would have created plain tables on one server, and the run
/// would prove nothing about the cluster.
pub(crate) async fn check_schema(urls: &[String], database: &str) -> anyhow::Result<()> {
    for url in urls {
        let server = ClickHouse::new(url, database);
        let tables = server
            .rows(&format!(
                "SELECT name, engine FROM system.tables WHERE database = '{database}'"
            ))
            .await
            .map_err(anyhow::Error::msg)?;
        let engine = |name: &str| {
            tables
                .iter()
                .find(|t| t["name"] == name)
                .and_then(|t| t["engine"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "missing".into())
        };
        for table in Table::ALL {
            let (distributed, local) = (engine(table.name()), engine(&format!("{table}_local")));
            if distributed != "Distributed" || !local.starts_with("Replicated") {
                bail!(
                    "loader migrate did not lay {database} out for a cluster on {url}: {table} is \
                     {distributed}, {table}_local is {local} (does the loader know CLICKHOUSE_CLUSTER?)"
                );
            }
        }
    }
    Ok(())
}

/// Where each table's keys were found, per server.
#[derive(Debug, Default)]
pub(crate) struct PlacementReport {
    sharded: bool,
    /// (table, distinct keys, keys per server, keys on more than one shard or missing
    /// on a replica, rows on a shard other than their key's)
    rows: Vec<(String, usize, Vec<usize>, usize, u64)>,
}

impl PlacementReport {
    /// The layout's name in scripts/cluster-services.
    pub(crate) fn layout(&self) -> &'static str {
        if self.sharded {
            "sharded"
        } else {
            "replicated"
        }
    }

    pub(crate) fn failed(&self) -> bool {
        self.rows
            .iter()
            .any(|(_, keys, per_server, misplaced, off_key)| {
                // A shard with none of many keys means rows were not spread by their key.
                let empty_shard = self.sharded && *keys >= 20 && per_server.contains(&0);
                *misplaced > 0 || *off_key > 0 || empty_shard
            })
    }

    pub(crate) fn table(&self) -> String {
        let servers = self.rows.first().map_or(0, |r| r.2.len());
        let mut out = if self.sharded {
            format!("placement ({servers} shards): every key on exactly one shard, the one its shard key names\n")
        } else {
            format!("placement (1 shard, {servers} replicas): every key on every replica\n")
        };
        let heads: Vec<String> = (1..=servers).map(|n| format!("server {n}")).collect();
        out.push_str(&format!(
            "{:<28}{:>8}{}{:>12}{:>10}\n",
            "table",
            "keys",
            heads.iter().map(|h| format!("{h:>10}")).collect::<String>(),
            if self.sharded { "on two" } else { "missing" },
            "off key"
        ));
        for (table, keys, per_server, misplaced, off_key) in &self.rows {
            out.push_str(&format!(
                "{table:<28}{keys:>8}{}{misplaced:>12}{off_key:>10}\n",
                per_server
                    .iter()
                    .map(|n| format!("{n:>10}"))
                    .collect::<String>()
            ));
        }
        out
    }
}

/// Checks, per storage table, aggregate state and table of the loader's own, that rows
/// sit where their shard key puts them: in 2 shards x 1 replica, each key on exactly one
/// server and every row on the shard `key % shards` names (server n serves shard n, as
/// scripts/cluster-services lays them out); in 1 shard x N replicas, every key on every
/// server.
pub(crate) async fn check_placement(
    layout: &Layout,
    urls: &[String],
    database: &str,
) -> anyhow::Result<PlacementReport> {
    let cluster = layout
        .cluster()
        .context("the placement check needs a cluster")?;
    let servers: Vec<ClickHouse> = urls.iter().map(|u| ClickHouse::new(u, database)).collect();
    let shape = servers[0]
        .rows(&format!(
            "SELECT uniqExact(shard_num) AS shards, count() AS servers FROM system.clusters \
             WHERE cluster = '{cluster}'"
        ))
        .await
        .map_err(anyhow::Error::msg)?;
    let shards = shape[0]["shards"].as_u64().unwrap_or_default() as usize;
    let sharded = match (shards, shape[0]["servers"].as_u64()) {
        (1, _) => false,
        (n, Some(s)) if n == s as usize && n == servers.len() => true,
        _ => bail!("placement check needs 1 shard, or 1 replica per shard with every server in --clickhouse-urls; cluster {cluster} has {shape:?}"),
    };
    let mut report = PlacementReport {
        sharded,
        rows: Vec::new(),
    };
    // The states are written by materialized views on the shard that took the events'
    // insert: their placement checks that the view fired there. tenant_days and
    // unmapped_fields_state are left out: views over per-delivery rows (by event) feed
    // them, so a (tenant, day) or a path may be on every shard, by design.
    let others = [
        "loader_blocks",
        "entity_keys",
        "calls_state",
        "contacts_state",
        "contact_lists_state",
        "messages_state",
    ];
    let names = Table::ALL.iter().map(|t| t.name()).chain(others);
    for table in names {
        let Some(Placement::Sharded(key)) = placement(table) else {
            bail!("{table} has no shard key");
        };
        let columns = key
            .strip_prefix("cityHash64(")
            .and_then(|k| k.strip_suffix(')'))
            .with_context(|| format!("shard key of {table} is not cityHash64(…): {key}"))?;
        let local = format!("{{db}}.{}", layout.local_table(table));
        let mut per_server = Vec::new();
        let mut off_key = 0;
        for (n, server) in servers.iter().enumerate() {
            if !sharded {
                // A replica fetches new parts in the background: wait until it has all.
                server
                    .execute(&format!("SYSTEM SYNC REPLICA {local}"))
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
            let keys = server
                .rows(&format!("SELECT DISTINCT {columns} FROM {local}"))
                .await
                .map_err(anyhow::Error::msg)?;
            per_server.push(keys.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>());
            if sharded {
                let off = server
                    .rows(&format!(
                        "SELECT count() AS n FROM {local} WHERE {key} % {shards} != {n}"
                    ))
                    .await
                    .map_err(anyhow::Error::msg)?;
                off_key += off[0]["n"].as_u64().unwrap_or_default();
            }
        }
        let all: BTreeSet<&String> = per_server.iter().flatten().collect();
        let misplaced = if sharded {
            let sum: usize = per_server.iter().map(BTreeSet::len).sum();
            sum - all.len()
        } else {
            per_server.iter().map(|keys| all.len() - keys.len()).sum()
        };
        report.rows.push((
            table.to_owned(),
            all.len(),
            per_server.iter().map(BTreeSet::len).collect(),
            misplaced,
            off_key,
        ));
    }
    Ok(report)
}
