#!/usr/bin/env bash
# Deduplication of re-sent blocks in cluster mode on ClickHouse 18.16 (no insert
# deduplication tokens there): a block sent again through a Distributed table
# (insert_distributed_sync=1), through either server, adds nothing on any shard, provided
# its bytes are the same; a server-filled DEFAULT now() or another row order defeats it;
# and replicated_deduplication_window bounds how far back a redo is recognised. Either layout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
DB=fact_dedup

fresh_db $DB
q 1 "CREATE TABLE $DB.ev_local ON CLUSTER $C
(
    event_id String, tenant String, call_id Int64, received_at_ms UInt64,
    loaded_at DateTime('UTC') DEFAULT now(),
    first_seen_rank UInt64 MATERIALIZED bitNot(received_at_ms)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/$DB.ev', '{replica}', first_seen_rank)
ORDER BY (tenant, call_id, event_id)" >/dev/null
q 1 "CREATE TABLE $DB.ev ON CLUSTER $C
(event_id String, tenant String, call_id Int64, received_at_ms UInt64, loaded_at DateTime('UTC') DEFAULT now())
ENGINE = Distributed($C, $DB, ev_local, cityHash64(tenant, call_id))" >/dev/null

# storage rows on each server's local table, and what the Distributed table shows
counts() { echo "$(q 1 "SELECT count() FROM $DB.ev_local") $(q 2 "SELECT count() FROM $DB.ev_local") $(q 1 "SELECT count() FROM $DB.ev")"; }
block() { # block FIRST LAST: rows with every value chosen by the client (loaded_at too)
    local i
    for i in $(seq "$1" "$2"); do printf 'e%d\tt%d\t%d\t%d\t2026-03-02 14:05:00\n' "$i" $((i % 3)) $((i % 17)) $((1000 + i)); done
}
sync_replicas() { if [ "$(layout)" = replicated ]; then q 2 "SYSTEM SYNC REPLICA $DB.ev_local" >/dev/null; q 1 "SYSTEM SYNC REPLICA $DB.ev_local" >/dev/null; fi; }

section "a block re-sent through a Distributed table (insert_distributed_sync=1)"
insert 1 $DB.ev TSV "$(block 1 40)" insert_distributed_sync=1
sync_replicas
first=$(counts)
note "after the first insert (server 1 local, server 2 local, Distributed): $first"
insert 1 $DB.ev TSV "$(block 1 40)" insert_distributed_sync=1
insert 2 $DB.ev TSV "$(block 1 40)" insert_distributed_sync=1
sync_replicas
check "the same bytes again, through server 1 and through server 2: every shard drops its sub-block" "$(counts)" "$first"
if [ "$(layout)" = replicated ]; then
    insert 2 $DB.ev_local TSV "$(block 1 40)"
    sync_replicas
    check "the same block straight into the other replica's local table: dropped (block ids live in ZooKeeper, per shard)" "$(counts)" "$first"
fi
insert 1 $DB.ev TSV "$(block 1 40 | sort -r)" insert_distributed_sync=1
sync_replicas
check "the same rows in another order: dropped too (the block id hashes the part, which is sorted by ORDER BY first)" "$(counts)" "$first"
insert 1 $DB.ev TSV "$(block 1 39)" insert_distributed_sync=1
sync_replicas
check "a block cut differently (rows 1-39 after 1-40) is new data: stored again (the views still collapse it)" \
    "$(q 1 "SELECT count() > 40 FROM $DB.ev") $(q 1 "SELECT count() FROM $DB.ev FINAL")" "1 40"

section "server-filled values defeat deduplication"
cols="event_id, tenant, call_id, received_at_ms"
insert 1 "$DB.ev ($cols)" TSV "$(block 101 110 | cut -f1-4)" insert_distributed_sync=1
sleep 1.1
insert 1 "$DB.ev ($cols)" TSV "$(block 101 110 | cut -f1-4)" insert_distributed_sync=1
check "a block whose loaded_at is left to DEFAULT now() and sent again a second later is stored twice" \
    "$(q 1 "SELECT count() FROM $DB.ev WHERE event_id IN ('e101','e102','e103','e104','e105','e106','e107','e108','e109','e110')")" 20

section "replicated_deduplication_window"
q 1 "CREATE TABLE $DB.w_local ON CLUSTER $C (k UInt64)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/$DB.w', '{replica}') ORDER BY k
SETTINGS replicated_deduplication_window = 3, cleanup_delay_period = 1, cleanup_delay_period_random_add = 0" >/dev/null
for k in 1 2 3 4 5; do insert 1 $DB.w_local TSV "$k"; done
sleep 4 # the cleanup thread prunes block ids beyond the window
check "ZooKeeper keeps the ids of the last N blocks per shard and table (N = 3 here)" \
    "$(q 1 "SELECT count() FROM system.zookeeper WHERE path = '/clickhouse/tables/0$(shard_of 1)/$DB.w/blocks'")" 3
insert 1 $DB.w_local TSV "5"
insert 1 $DB.w_local TSV "1"
check "a block among the last 3 is dropped when sent again; an older one is inserted twice" \
    "$(q 1 "SELECT k, count() FROM $DB.w_local WHERE k IN (1, 5) GROUP BY k ORDER BY k" | tr '\t\n' ': ')" "1:2 5:1 "
drop_db $DB
finish
