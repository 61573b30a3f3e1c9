//! One test per statement shape of the cluster rewrite, including the shapes of the
//! analytics-state migration (AggregatingMergeTree states fed by materialized views,
//! month-partitioned per-event tables, views replaced with DROP + CREATE). The whole
//! output for the current migrations is compared with the reference script in
//! `warehouse/tests/cluster_ddl.rs`.

use super::rewrite::Rewriter;
use super::*;

fn rewriter() -> Rewriter<'static> {
    Rewriter::new("db", "c")
}

fn one(rw: &mut Rewriter<'_>, statement: &str) -> Vec<String> {
    rw.rewrite(statement)
        .unwrap_or_else(|e| panic!("{statement}: {e}"))
}

const CALLS: &str =
    "CREATE TABLE IF NOT EXISTS db.call_events_store\n(\n    event_id String,\n    \
     tenant String,\n    call_id Int64,\n    received_at_ms UInt64,\n    \
     loaded_at DateTime('UTC') DEFAULT now(),\n    \
     first_seen_rank UInt64 MATERIALIZED bitNot(received_at_ms)\n)\n\
     ENGINE = ReplacingMergeTree(first_seen_rank)\nORDER BY (tenant, call_id, event_id)";

#[test]
fn an_empty_cluster_setting_means_one_server_and_a_name_means_a_cluster() {
    assert_eq!(Layout::from_cluster_setting(""), Ok(Layout::Single));
    assert_eq!(
        Layout::from_cluster_setting("switchboard"),
        Ok(Layout::Cluster {
            name: "switchboard".into()
        })
    );
    assert_eq!(
        Layout::from_cluster_setting("a b"),
        Err(LayoutError::BadClusterName("a b".into()))
    );
}

#[test]
fn one_server_gets_the_migrations_as_written() {
    let laid_out = Layout::Single.migrations("db").unwrap();
    assert_eq!(laid_out.len(), MIGRATIONS.len());
    for (migration, statements) in laid_out {
        assert_eq!(statements, migration.statements("db"));
    }
    assert_eq!(
        Layout::Single.create_database("db"),
        "CREATE DATABASE IF NOT EXISTS db"
    );
    assert!(!Layout::Single
        .schema_migrations("db")
        .contains("Replicated"));
}

#[test]
fn every_current_migration_has_cluster_statements_that_all_run_on_the_cluster() {
    let cluster = Layout::Cluster { name: "c".into() };
    for (migration, statements) in cluster.migrations("db").unwrap() {
        assert!(!statements.is_empty(), "{}", migration.name);
        for s in statements {
            assert!(s.contains(" ON CLUSTER c"), "{s}");
        }
    }
}

#[test]
fn a_database_is_created_on_every_server() {
    let mut rw = rewriter();
    assert_eq!(
        one(&mut rw, "CREATE DATABASE IF NOT EXISTS db"),
        ["CREATE DATABASE IF NOT EXISTS db ON CLUSTER c"]
    );
    let cluster = Layout::Cluster { name: "c".into() };
    assert_eq!(
        cluster.create_database("db"),
        "CREATE DATABASE IF NOT EXISTS db ON CLUSTER c"
    );
}

#[test]
fn schema_migrations_is_one_replicated_copy_on_every_server() {
    let sql = Layout::Cluster { name: "c".into() }.schema_migrations("db");
    assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS db.schema_migrations ON CLUSTER c"));
    assert!(
        sql.contains("('/clickhouse/tables/all/db.schema_migrations', '{replica}', applied_at)")
    );
    assert!(
        !sql.contains("{shard}") && !sql.contains("DEFAULT"),
        "{sql}"
    );
    assert_eq!(placement(SCHEMA_MIGRATIONS), Some(Placement::EveryServer));
}

#[test]
fn a_table_becomes_a_replicated_local_table_and_a_distributed_table_over_it() {
    let out = one(&mut rewriter(), CALLS);
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[0],
        "CREATE TABLE IF NOT EXISTS db.call_events_store_local ON CLUSTER c\n(\n    \
         event_id String,\n    tenant String,\n    call_id Int64,\n    received_at_ms UInt64,\n    \
         loaded_at DateTime('UTC') DEFAULT now(),\n    \
         first_seen_rank UInt64 MATERIALIZED bitNot(received_at_ms)\n)\n\
         ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db.call_events_store', \
         '{replica}', first_seen_rank)\nORDER BY (tenant, call_id, event_id)\n\
         SETTINGS replicated_deduplication_window = 10000"
    );
    // The MATERIALIZED column is computed by the shard: a Distributed table listing it
    // would refuse inserts. DEFAULT columns stay.
    assert_eq!(
        out[1],
        "CREATE TABLE IF NOT EXISTS db.call_events_store ON CLUSTER c\n(\n    \
         event_id String,\n    tenant String,\n    call_id Int64,\n    received_at_ms UInt64,\n    \
         loaded_at DateTime('UTC') DEFAULT now()\n)\n\
         ENGINE = Distributed(c, db, call_events_store_local, cityHash64(tenant, call_id))"
    );
}

#[test]
fn an_engine_without_arguments_gets_only_the_path_and_replica() {
    let out = one(
        &mut rewriter(),
        "CREATE TABLE db.loader_blocks (topic String, recorded_at DateTime('UTC') DEFAULT now()) \
         ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(recorded_at) ORDER BY topic",
    );
    assert!(out[0].contains(
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db.loader_blocks', '{replica}')\n\
         PARTITION BY toYYYYMM(recorded_at) ORDER BY topic\nSETTINGS"
    ), "{}", out[0]);
    assert!(out[1].ends_with("cityHash64(consumer_group, topic, partition))"));
}

#[test]
fn the_dedup_window_joins_settings_the_table_already_has() {
    let out = one(
        &mut rewriter(),
        "CREATE TABLE db.loader_blocks (topic String) ENGINE = MergeTree ORDER BY topic \
         SETTINGS index_granularity = 1024",
    );
    assert!(
        out[0].ends_with(
            "ORDER BY topic SETTINGS replicated_deduplication_window = 10000, index_granularity = 1024"
        ),
        "{}",
        out[0]
    );
}

#[test]
fn month_partitioned_event_tables_keep_their_partitioning() {
    let out = one(
        &mut rewriter(),
        "CREATE TABLE IF NOT EXISTS db.call_events_store_v2 (event_id String, tenant String, \
         call_id Int64, key_day Date, loaded_at_ms UInt64) ENGINE = ReplacingMergeTree(loaded_at_ms) \
         PARTITION BY toYYYYMM(key_day) ORDER BY (tenant, key_day, call_id, event_id)",
    );
    assert!(out[0].contains(
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db.call_events_store_v2', '{replica}', loaded_at_ms)\n\
         PARTITION BY toYYYYMM(key_day) ORDER BY (tenant, key_day, call_id, event_id)\n"
    ));
    assert!(out[1].ends_with("call_events_store_v2_local, cityHash64(tenant, call_id))"));
}

/// A state table and the view that feeds it, shaped as in the analytics-state migration.
fn state_table_and_view(rw: &mut Rewriter<'_>) -> (Vec<String>, Vec<String>) {
    one(
        rw,
        "CREATE TABLE db.call_events_store_v2 (tenant String, key_day Date, call_id Int64, \
         event_id String, direction String) ENGINE = ReplacingMergeTree ORDER BY (tenant, call_id)",
    );
    let table = one(
        rw,
        "CREATE TABLE IF NOT EXISTS db.calls_state\n(\n    tenant String,\n    key_day Date,\n    \
         call_id Int64,\n    s_direction AggregateFunction(maxIf, Tuple(UInt64, String), UInt8),\n    \
         s_events AggregateFunction(uniqExact, String)\n)\nENGINE = AggregatingMergeTree\n\
         PARTITION BY toYYYYMM(key_day)\nORDER BY (tenant, key_day, call_id)",
    );
    let view = one(
        rw,
        "CREATE MATERIALIZED VIEW IF NOT EXISTS db.calls_state_mv TO db.calls_state AS\nSELECT\n    \
         tenant, key_day, call_id,\n    maxIfState((1, direction), direction != '') AS s_direction,\n    \
         uniqExactState(event_id) AS s_events\nFROM db.call_events_store_v2\n\
         GROUP BY tenant, key_day, call_id",
    );
    (table, view)
}

#[test]
fn aggregate_state_tables_become_replicated_aggregating_merge_trees() {
    let (table, _) = state_table_and_view(&mut rewriter());
    assert!(table[0].contains(
        "ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/db.calls_state', '{replica}')\n"
    ), "{}", table[0]);
    // Aggregate-function columns are what the Distributed table reads and merges.
    assert!(table[1].contains("s_events AggregateFunction(uniqExact, String)\n)"));
    assert!(table[1].ends_with("calls_state_local, cityHash64(tenant, call_id))"));
}

#[test]
fn a_materialized_view_reads_and_writes_the_local_tables() {
    let (_, view) = state_table_and_view(&mut rewriter());
    assert_eq!(
        view,
        ["CREATE MATERIALIZED VIEW IF NOT EXISTS db.calls_state_mv ON CLUSTER c TO db.calls_state_local AS SELECT\n    \
          tenant, key_day, call_id,\n    maxIfState((1, direction), direction != '') AS s_direction,\n    \
          uniqExactState(event_id) AS s_events\nFROM db.call_events_store_v2_local\n\
          GROUP BY tenant, key_day, call_id"]
    );
}

#[test]
fn a_materialized_view_without_a_sharded_target_or_source_is_refused() {
    let mut rw = rewriter();
    assert_eq!(
        rw.rewrite("CREATE MATERIALIZED VIEW db.m ENGINE = Memory AS SELECT 1"),
        Err(LayoutError::ViewWithoutTarget("m".into()))
    );
    assert_eq!(
        rw.rewrite("CREATE MATERIALIZED VIEW db.m TO db.calls_state AS SELECT 1"),
        Err(LayoutError::ViewTargetNotSharded {
            view: "m".into(),
            target: "calls_state".into()
        })
    );
    state_table_and_view(&mut rw);
    assert_eq!(
        rw.rewrite("CREATE MATERIALIZED VIEW db.m TO db.calls_state AS SELECT * FROM db.calls"),
        Err(LayoutError::ViewSourceNotSharded("m".into()))
    );
}

#[test]
fn a_view_reads_the_distributed_tables_unchanged() {
    let mut rw = rewriter();
    one(&mut rw, CALLS);
    assert_eq!(
        one(
            &mut rw,
            "CREATE VIEW IF NOT EXISTS db.call_events AS\nSELECT event_id\nFROM db.call_events_store FINAL"
        ),
        ["CREATE VIEW IF NOT EXISTS db.call_events ON CLUSTER c AS SELECT event_id\nFROM db.call_events_store FINAL"]
    );
}

#[test]
fn dropping_a_view_drops_it_on_every_server() {
    assert_eq!(
        one(&mut rewriter(), "DROP TABLE IF EXISTS db.calls"),
        ["DROP TABLE IF EXISTS db.calls ON CLUSTER c"]
    );
    assert_eq!(
        one(&mut rewriter(), "DROP TABLE db.calls"),
        ["DROP TABLE IF EXISTS db.calls ON CLUSTER c"]
    );
}

#[test]
fn dropping_a_sharded_table_drops_its_local_table_after_it() {
    let mut rw = rewriter();
    one(&mut rw, CALLS);
    assert_eq!(
        one(&mut rw, "DROP TABLE IF EXISTS db.call_events_store"),
        [
            "DROP TABLE IF EXISTS db.call_events_store ON CLUSTER c",
            "DROP TABLE IF EXISTS db.call_events_store_local ON CLUSTER c"
        ]
    );
    // Gone: an ALTER of it now has nothing to work on.
    assert_eq!(
        rw.rewrite("ALTER TABLE db.call_events_store DROP COLUMN x"),
        Err(LayoutError::AlterOfUnknownTable("call_events_store".into()))
    );
}

#[test]
fn adding_a_column_alters_every_local_table_and_recreates_the_distributed_table() {
    let mut rw = rewriter();
    one(&mut rw, CALLS);
    let out = one(
        &mut rw,
        "ALTER TABLE db.call_events_store ADD COLUMN queue String AFTER call_id",
    );
    assert_eq!(
        out[..2],
        [
            "ALTER TABLE db.call_events_store_local ON CLUSTER c ADD COLUMN queue String AFTER call_id",
            "DROP TABLE IF EXISTS db.call_events_store ON CLUSTER c"
        ]
    );
    assert!(
        out[2].contains("loaded_at DateTime('UTC') DEFAULT now(),\n    queue String\n)"),
        "{}",
        out[2]
    );
    // The next ALTER builds on the columns this one left.
    let out = one(
        &mut rw,
        "ALTER TABLE db.call_events_store DROP COLUMN tenant, MODIFY COLUMN queue LowCardinality(String) FIRST",
    );
    assert!(!out[2].contains("tenant String"), "{}", out[2]);
    assert!(
        out[2].contains("queue LowCardinality(String)\n)"),
        "{}",
        out[2]
    );
}

#[test]
fn computed_columns_and_partition_operations_leave_the_distributed_table_alone() {
    let mut rw = rewriter();
    one(&mut rw, CALLS);
    for op in [
        "ADD COLUMN day Date MATERIALIZED toDate(loaded_at)",
        "DROP PARTITION 202601",
        "MODIFY SETTING index_granularity = 1024",
        "COMMENT COLUMN tenant 'who'",
    ] {
        let out = one(&mut rw, &format!("ALTER TABLE db.call_events_store {op}"));
        assert_eq!(
            out,
            [format!(
                "ALTER TABLE db.call_events_store_local ON CLUSTER c {op}"
            )]
        );
    }
}

#[test]
fn renaming_a_column_renames_it_in_the_distributed_table() {
    let mut rw = rewriter();
    one(&mut rw, CALLS);
    let out = one(
        &mut rw,
        "ALTER TABLE db.call_events_store RENAME COLUMN tenant TO account",
    );
    assert!(out[2].contains("    account String,\n"), "{}", out[2]);
}

#[test]
fn an_alter_without_a_cluster_rule_is_refused_naming_the_clause() {
    let mut rw = rewriter();
    one(&mut rw, CALLS);
    assert_eq!(
        rw.rewrite("ALTER TABLE db.call_events_store ADD INDEX i tenant TYPE set(0) GRANULARITY 1"),
        Err(LayoutError::UnknownAlter {
            table: "call_events_store".into(),
            clause: "ADD INDEX i tenant TYPE set(0) GRANULARITY 1".into()
        })
    );
    assert_eq!(
        rw.rewrite("ALTER TABLE db.nowhere ADD COLUMN x UInt8"),
        Err(LayoutError::AlterOfUnknownTable("nowhere".into()))
    );
}

#[test]
fn a_table_without_a_shard_key_or_a_replicated_engine_is_refused() {
    let mut rw = rewriter();
    assert_eq!(
        rw.rewrite("CREATE TABLE db.mystery (a UInt8) ENGINE = MergeTree ORDER BY a"),
        Err(LayoutError::NoShardKey("mystery".into()))
    );
    assert_eq!(
        rw.rewrite("CREATE TABLE db.loader_blocks (a UInt8) ENGINE = Memory"),
        Err(LayoutError::NotReplicable {
            table: "loader_blocks".into(),
            engine: "Memory".into()
        })
    );
    assert_eq!(
        rw.rewrite("CREATE TABLE db.loader_blocks (d Date) ENGINE = MergeTree(d, (d), 8192)"),
        Err(LayoutError::NoOrderBy("loader_blocks".into()))
    );
}

#[test]
fn unknown_statement_shapes_are_errors_that_name_the_statement() {
    for statement in [
        "INSERT INTO db.calls VALUES (1)",
        "CREATE TABLE db.copy AS db.calls",
        "CREATE TABLE other.t (a UInt8) ENGINE = MergeTree ORDER BY a",
        "CREATE OR REPLACE VIEW db.v AS SELECT 1",
        "RENAME TABLE db.a TO db.b",
        "DROP DATABASE db",
        "DROP TABLE db.calls SYNC",
        "TRUNCATE TABLE db.calls",
        "OPTIMIZE TABLE db.calls FINAL",
    ] {
        let error = rewriter().rewrite(statement).unwrap_err();
        assert_eq!(
            error,
            LayoutError::UnknownStatement(statement.into()),
            "{statement}"
        );
        assert!(error.to_string().contains(statement), "{error}");
    }
}

#[test]
fn every_table_has_one_shard_key_and_the_known_ones_follow_the_entity() {
    let mut names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
    names.extend(OTHER_SHARD_KEYS.iter().map(|(name, _)| *name));
    let count = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), count, "a table is listed twice");
    assert_eq!(
        placement("call_events_store"),
        placement("calls_state"),
        "a state sits on the shard of the events that feed it"
    );
    assert_eq!(
        placement("raw_events_store"),
        Some(Placement::Sharded("cityHash64(tenant, event_id)"))
    );
    assert_eq!(placement("calls"), None);
}

#[test]
fn local_tables_are_named_only_in_a_cluster() {
    assert_eq!(Layout::Single.local_table("calls_state"), "calls_state");
    let cluster = Layout::Cluster { name: "c".into() };
    assert_eq!(cluster.local_table("calls_state"), "calls_state_local");
}
