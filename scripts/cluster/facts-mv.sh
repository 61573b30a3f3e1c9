#!/usr/bin/env bash
# Materialized views in cluster mode on ClickHouse 18.16: an MV attached to a Replicated
# local table fires on the server that receives an insert, never on a replica that fetches
# the part; its target, Replicated too, carries the result to the other replicas once; a
# re-sent block is dropped by the source and by the target. A probe MV into a plain
# (non-replicated) MergeTree counts where and how often the MV fires. Either layout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
DB=fact_mv

fresh_db $DB
q 1 "CREATE TABLE $DB.ev_local ON CLUSTER $C (event_id String, tenant String, call_id Int64, received_at_ms UInt64)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/$DB.ev', '{replica}', received_at_ms) ORDER BY (tenant, call_id, event_id)" >/dev/null
q 1 "CREATE TABLE $DB.ev ON CLUSTER $C (event_id String, tenant String, call_id Int64, received_at_ms UInt64)
ENGINE = Distributed($C, $DB, ev_local, cityHash64(tenant, call_id))" >/dev/null
STATE_COLS="tenant String, call_id Int64, events AggregateFunction(count), distinct_events AggregateFunction(uniqExact, String), last_ms AggregateFunction(max, UInt64)"
q 1 "CREATE TABLE $DB.per_call_local ON CLUSTER $C ($STATE_COLS)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/$DB.per_call', '{replica}') ORDER BY (tenant, call_id)" >/dev/null
q 1 "CREATE TABLE $DB.per_call ON CLUSTER $C ($STATE_COLS) ENGINE = Distributed($C, $DB, per_call_local, cityHash64(tenant, call_id))" >/dev/null
q 1 "CREATE MATERIALIZED VIEW $DB.per_call_mv ON CLUSTER $C TO $DB.per_call_local AS
SELECT tenant, call_id, countState() AS events, uniqExactState(event_id) AS distinct_events, maxState(received_at_ms) AS last_ms
FROM $DB.ev_local GROUP BY tenant, call_id" >/dev/null
q 1 "CREATE TABLE $DB.probe ON CLUSTER $C (rows UInt64) ENGINE = MergeTree ORDER BY tuple()" >/dev/null
q 1 "CREATE MATERIALIZED VIEW $DB.probe_mv ON CLUSTER $C TO $DB.probe AS SELECT count() AS rows FROM $DB.ev_local" >/dev/null

fired() { echo "$(q 1 "SELECT count() FROM $DB.probe") $(q 2 "SELECT count() FROM $DB.probe")"; }
totals() { q "$1" "SELECT sum(n), sum(d) FROM (SELECT tenant, call_id, countMerge(events) AS n, uniqExactMerge(distinct_events) AS d FROM $DB.per_call GROUP BY tenant, call_id)"; }
local_totals() { q "$1" "SELECT sum(n), sum(d) FROM (SELECT tenant, call_id, countMerge(events) AS n, uniqExactMerge(distinct_events) AS d FROM $DB.per_call_local GROUP BY tenant, call_id)"; }
sync_replicas() {
    if [ "$(layout)" = replicated ]; then
        local t; for t in ev_local per_call_local; do q 2 "SYSTEM SYNC REPLICA $DB.$t" >/dev/null; q 1 "SYSTEM SYNC REPLICA $DB.$t" >/dev/null; done
    fi
}
BLOCK="SELECT concat('e', toString(number)), 't', number % 50, 1000 + number FROM numbers(200)"

section "where an MV fires"
q 1 "INSERT INTO $DB.ev $BLOCK" insert_distributed_sync=1
sync_replicas
if [ "$(layout)" = replicated ]; then
    check "insert through server 1: the MV fired on server 1 only; server 2 fetched the parts (source and target) without firing it" "$(fired)" "1 0"
    check "the target's result is on both replicas, once: 200 events of 200 distinct ids on each" "$(local_totals 1) / $(local_totals 2)" "200	200 / 200	200"
else
    check "insert through server 1 into 2 shards: each shard's MV fired once, on its own sub-block" "$(fired)" "1 1"
fi
check "the per-call states merged over Distributed: 200 events, 200 distinct" "$(totals 2)" "200	200"

section "re-sent blocks and sender duplicates"
q 2 "INSERT INTO $DB.ev $BLOCK" insert_distributed_sync=1
sync_replicas
if [ "$(layout)" = replicated ]; then want_fired="1 0"; else want_fired="1 1"; fi
check "the same block again through server 2: the source drops it as a duplicate, and the MVs do not fire for it (probe rows unchanged)" "$(fired)" "$want_fired"
check "the same block again through the other server: dropped by the source, and the MV's identical output dropped by the replicated target" "$(totals 1)" "200	200"
q 1 "INSERT INTO $DB.ev SELECT concat('e', toString(number)), 't', number % 50, 5000 + number FROM numbers(10)" insert_distributed_sync=1
sync_replicas
check "a sender retry (same event ids, later receipt: a new block): count() states count it twice, uniqExact(event_id) does not" "$(totals 1)" "210	200"
drop_db $DB
finish
