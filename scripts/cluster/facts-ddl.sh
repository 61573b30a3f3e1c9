#!/usr/bin/env bash
# Cluster DDL on ClickHouse 18.16: the statement shapes of cluster mode (ON CLUSTER,
# Replicated engines with {shard}/{replica} macros, Distributed tables, views, MVs, ALTER),
# what they answer, and what 18.16 refuses. Either layout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
DB=fact_ddl

section "CREATE DATABASE / TABLE / VIEW ... ON CLUSTER"
fresh_db $DB
answer=$(q 1 "CREATE TABLE IF NOT EXISTS $DB.ev_local ON CLUSTER $C
(
    event_id String, tenant String, call_id Int64, received_at_ms UInt64,
    loaded_at DateTime('UTC') DEFAULT now(),
    first_seen_rank UInt64 MATERIALIZED bitNot(received_at_ms)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/$DB.ev', '{replica}', first_seen_rank)
ORDER BY (tenant, call_id, event_id)
SETTINGS replicated_deduplication_window = 10000")
check "ON CLUSTER answers one row per server (host, port, status 0, error, hosts left, hosts active)" \
    "$(printf '%s\n' "$answer" | cut -f2,3 | sort | tr '\n' ' ')" "39001	0 39002	0 "
again=$(q 1 "CREATE TABLE IF NOT EXISTS $DB.ev_local ON CLUSTER $C (event_id String) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/$DB.ev', '{replica}') ORDER BY event_id")
check "the same CREATE ... IF NOT EXISTS ON CLUSTER again succeeds on every server (idempotent)" \
    "$(printf '%s\n' "$again" | cut -f3 | sort -u)" "0"
check "the macros were expanded by each server into the ZooKeeper path" \
    "$(q 2 "SELECT zookeeper_path, replica_name FROM system.replicas WHERE database = '$DB' AND table = 'ev_local'")" \
    "/clickhouse/tables/0$(shard_of 2)/$DB.ev	ch2"
check "replicated_deduplication_window is a table setting in CREATE (SETTINGS clause)" \
    "$(q 2 "SELECT engine_full LIKE '%replicated_deduplication_window = 10000%' FROM system.tables WHERE database = '$DB' AND name = 'ev_local'")" 1
check "ALTER TABLE ... MODIFY SETTING does not exist on 18.16 (Code 62, syntax)" \
    "$(q_err 1 "ALTER TABLE $DB.ev_local MODIFY SETTING replicated_deduplication_window = 5")" "Code 62"

q 1 "CREATE TABLE IF NOT EXISTS $DB.ev_copied ON CLUSTER $C AS $DB.ev_local ENGINE = Distributed($C, $DB, ev_local, cityHash64(tenant, call_id))" >/dev/null
check "CREATE TABLE d AS local ENGINE = Distributed copies the MATERIALIZED column, and inserts then fail (Code 44)" \
    "$(q_err 1 "INSERT INTO $DB.ev_copied (event_id, tenant, call_id, received_at_ms) VALUES ('e', 't', 1, 1)" insert_distributed_sync=1)" "Code 44"
q 1 "CREATE TABLE IF NOT EXISTS $DB.ev ON CLUSTER $C
(
    event_id String, tenant String, call_id Int64, received_at_ms UInt64,
    loaded_at DateTime('UTC') DEFAULT now()
)
ENGINE = Distributed($C, $DB, ev_local, cityHash64(tenant, call_id))" >/dev/null
check "a Distributed table listing the columns without the MATERIALIZED one takes inserts" \
    "$(q_err 1 "INSERT INTO $DB.ev (event_id, tenant, call_id, received_at_ms, loaded_at) VALUES ('e1', 't', 1, 5, '2026-01-01 00:00:00')" insert_distributed_sync=1)" "no error"
check "... and the shard computes the MATERIALIZED column" \
    "$(q 1 "SELECT DISTINCT first_seen_rank FROM remote('127.0.0.1:{39001,39002}', $DB, ev_local) WHERE event_id = 'e1'")" \
    "$(q 1 "SELECT bitNot(toUInt64(5))")"

q 1 "CREATE VIEW IF NOT EXISTS $DB.calls ON CLUSTER $C AS
SELECT tenant, call_id, count() AS events, min(received_at_ms) AS first_ms FROM $DB.ev FINAL GROUP BY tenant, call_id" >/dev/null
check "CREATE VIEW IF NOT EXISTS ... ON CLUSTER: the view exists on both servers and reads all shards" \
    "$(q 1 "SELECT count() FROM $DB.calls") $(q 2 "SELECT count() FROM $DB.calls")" "1 1"

section "MATERIALIZED VIEW ... ON CLUSTER TO a replicated local table"
q 1 "CREATE TABLE IF NOT EXISTS $DB.per_call_local ON CLUSTER $C
(tenant String, call_id Int64, events AggregateFunction(count), first_ms AggregateFunction(min, UInt64))
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/$DB.per_call', '{replica}')
ORDER BY (tenant, call_id)" >/dev/null
q 1 "CREATE TABLE IF NOT EXISTS $DB.per_call ON CLUSTER $C
(tenant String, call_id Int64, events AggregateFunction(count), first_ms AggregateFunction(min, UInt64))
ENGINE = Distributed($C, $DB, per_call_local, cityHash64(tenant, call_id))" >/dev/null
check "CREATE MATERIALIZED VIEW IF NOT EXISTS m ON CLUSTER c TO local AS SELECT ... FROM source_local" \
    "$(q_err 1 "CREATE MATERIALIZED VIEW IF NOT EXISTS $DB.per_call_mv ON CLUSTER $C TO $DB.per_call_local AS
SELECT tenant, call_id, countState() AS events, minState(received_at_ms) AS first_ms FROM $DB.ev_local GROUP BY tenant, call_id")" "no error"
q 1 "INSERT INTO $DB.ev (event_id, tenant, call_id, received_at_ms, loaded_at) SELECT concat('x', toString(number)), 't', number % 10, number, '2026-01-01 00:00:00' FROM numbers(100)" insert_distributed_sync=1
sync_replicas() { if [ "$(layout)" = replicated ]; then local t; for t in "$@"; do q 2 "SYSTEM SYNC REPLICA $DB.$t" >/dev/null; done; fi; }
sync_replicas ev_local per_call_local
check "ReplicatedAggregatingMergeTree states merged over Distributed = the same aggregate over the source" \
    "$(q 2 "SELECT sum(e), sum(f) FROM (SELECT tenant, call_id, countMerge(events) AS e, minMerge(first_ms) AS f FROM $DB.per_call GROUP BY tenant, call_id)")" \
    "$(q 2 "SELECT sum(e), sum(f) FROM (SELECT tenant, call_id, count() AS e, min(received_at_ms) AS f FROM $DB.ev WHERE event_id LIKE 'x%' GROUP BY tenant, call_id)")"

section "ALTER ... ON CLUSTER"
answer=$(q 1 "ALTER TABLE $DB.ev_local ON CLUSTER $C ADD COLUMN note String DEFAULT ''" replication_alter_partitions_sync=2)
hosts=$(printf '%s\n' "$answer" | grep -c . || true)
if [ "$(layout)" = replicated ]; then
    note "ALTER of a Replicated table ON CLUSTER, 1 shard x 2 replicas: $hosts answer row(s): $(printf '%s' "$answer" | cut -f1,2 | tr '\n' ' ')"
fi
check "the column reached every replica of every shard" \
    "$(q 1 "SELECT count() FROM system.columns WHERE database = '$DB' AND table = 'ev_local' AND name = 'note'") $(q 2 "SELECT count() FROM system.columns WHERE database = '$DB' AND table = 'ev_local' AND name = 'note'")" "1 1"
check "ALTER TABLE distributed ON CLUSTER is refused when the cluster's shards say internal_replication (Code 371)" \
    "$(q_err 1 "ALTER TABLE $DB.ev ON CLUSTER $C ADD COLUMN note String DEFAULT ''")" "Code 371"
note "$(last_error 400)"
q 1 "DROP TABLE IF EXISTS $DB.ev ON CLUSTER $C" >/dev/null
q 1 "CREATE TABLE IF NOT EXISTS $DB.ev ON CLUSTER $C
(
    event_id String, tenant String, call_id Int64, received_at_ms UInt64,
    loaded_at DateTime('UTC') DEFAULT now(), note String DEFAULT ''
)
ENGINE = Distributed($C, $DB, ev_local, cityHash64(tenant, call_id))" >/dev/null
check "instead: DROP TABLE distributed ON CLUSTER + CREATE it again with the new column list (it holds no data)" \
    "$(q_err 2 "INSERT INTO $DB.ev (event_id, tenant, call_id, received_at_ms, loaded_at, note) VALUES ('e2', 't', 2, 6, '2026-01-01 00:00:00', 'n')" insert_distributed_sync=1)$(q 1 "SYSTEM SYNC REPLICA $DB.ev_local") $(q 1 "SELECT note FROM $DB.ev WHERE event_id = 'e2'") $(q 1 "SELECT count() FROM $DB.calls WHERE call_id = 2")" "no error n 1"
check "a Distributed table that lacks a column the local table has still reads the others (so: local first, then Distributed)" \
    "$(q 1 "SELECT count() FROM $DB.ev_copied")" "$(q 1 "SELECT count() FROM $DB.ev")"

section "a table replicated to every server, whatever the shard (schema_migrations)"
q 1 "CREATE TABLE IF NOT EXISTS $DB.schema_migrations ON CLUSTER $C
(version UInt32, name String, applied_at DateTime('UTC'))
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/$DB.schema_migrations', '{replica}', applied_at)
ORDER BY version" >/dev/null
q 1 "INSERT INTO $DB.schema_migrations VALUES (1, 'init', '2026-01-01 00:00:00'), (2, 'entities', '2026-01-01 00:00:00')" insert_quorum=2
check "a ZooKeeper path without {shard} makes every server a replica: a quorum insert on server 1 is read on server 2" \
    "$(q 2 "SELECT max(version), count() FROM $DB.schema_migrations FINAL")" "2	2"
check "... and the replicas are ch1 and ch2, in either layout" "$(zk_children /clickhouse/tables/all/$DB.schema_migrations/replicas)" "ch1 ch2"

section "partition operations ON CLUSTER on a replicated table (loader_blocks retention)"
q 1 "CREATE TABLE IF NOT EXISTS $DB.blocks_local ON CLUSTER $C
(consumer_group String, topic String, partition Int32, first_offset Int64, last_offset Int64, recorded_at DateTime('UTC'))
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/$DB.blocks', '{replica}')
PARTITION BY toYYYYMM(recorded_at) ORDER BY (consumer_group, topic, partition, first_offset)" >/dev/null
q 1 "CREATE TABLE IF NOT EXISTS $DB.blocks ON CLUSTER $C
(consumer_group String, topic String, partition Int32, first_offset Int64, last_offset Int64, recorded_at DateTime('UTC'))
ENGINE = Distributed($C, $DB, blocks_local, cityHash64(consumer_group, topic, partition))" >/dev/null
q 1 "INSERT INTO $DB.blocks SELECT 'g', 'webhooks.normalized', toInt32(number % 12), number * 100, number * 100 + 99, if(number < 30, '2026-01-15 00:00:00', '2026-02-15 00:00:00') FROM numbers(60)" insert_distributed_sync=1
sync_replicas blocks_local
check "the block log read through Distributed with FINAL finds a range wherever its partition's rows live" \
    "$(q 2 "SELECT last_offset FROM $DB.blocks FINAL WHERE consumer_group = 'g' AND topic = 'webhooks.normalized' AND partition = 7 AND first_offset = 4300 LIMIT 1")" 4399
check "ALTER TABLE local ON CLUSTER DROP PARTITION drops the month on every shard and replica" \
    "$(q_err 1 "ALTER TABLE $DB.blocks_local ON CLUSTER $C DROP PARTITION 202601") $(sync_replicas blocks_local)$(q 1 "SELECT count() FROM $DB.blocks") $(q 2 "SELECT count() FROM $DB.blocks_local WHERE recorded_at < '2026-02-01 00:00:00'")" "no error 30 0"

section "DROP DATABASE ... ON CLUSTER"
q 1 "DROP DATABASE $DB ON CLUSTER $C" >/dev/null
check "dropping every replica of a table removes its ZooKeeper path (/clickhouse/tables/{01,02,all}/$DB.*)" \
    "$(for p in 01 02 all; do q 1 "SELECT count() FROM system.zookeeper WHERE path = '/clickhouse/tables/$p' AND name LIKE '$DB.%'" 2>/dev/null || echo 0; done | tr '\n' ' ')" "0 0 0 "
finish
