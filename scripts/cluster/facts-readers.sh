#!/usr/bin/env bash
# Readers across shards on ClickHouse 18.16: FINAL over a Distributed table collapses per
# shard; a duplicate on the wrong shard stays visible; GROUP BY entity over Distributed is
# exact; JOINs of Distributed tables (Code 288, distributed_product_mode local vs global);
# views over Distributed tables; skip_unavailable_shards. Either layout (the wrong-shard
# and JOIN placement checks need the sharded one).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
DB=fact_readers

fresh_db $DB
for t in ev:"tenant, call_id, event_id":"cityHash64(tenant, call_id)" contacts:"tenant, contact_id":"cityHash64(tenant, contact_id)"; do
    name=${t%%:*} rest=${t#*:}; order=${rest%%:*}; key=${rest#*:}
    if [ "$name" = ev ]; then
        cols="event_id String, tenant String, call_id Int64, contact_id Int64, talk UInt32, received_at_ms UInt64"
    else
        cols="tenant String, contact_id Int64, name String, received_at_ms UInt64"
    fi
    q 1 "CREATE TABLE $DB.${name}_local ON CLUSTER $C ($cols)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/$DB.$name', '{replica}', received_at_ms) ORDER BY ($order)" >/dev/null
    q 1 "CREATE TABLE $DB.$name ON CLUSTER $C ($cols) ENGINE = Distributed($C, $DB, ${name}_local, $key)" >/dev/null
done
# 1000 calls of 2 events each, every event sent twice (a sender retry): 4000 storage rows.
for pass in 1 2; do
    q 1 "INSERT INTO $DB.ev SELECT concat('e', toString(number)), 't', intDiv(number, 2), intDiv(number, 2) % 50, 10, $pass FROM numbers(2000)" insert_distributed_sync=1
done
q 1 "INSERT INTO $DB.contacts SELECT 't', number, concat('c', toString(number)), 1 FROM numbers(50)" insert_distributed_sync=1
if [ "$(layout)" = replicated ]; then q 2 "SYSTEM SYNC REPLICA $DB.ev_local" >/dev/null; fi

section "FINAL and GROUP BY over a Distributed table"
check "FINAL over Distributed is applied by each shard to its own rows: 4000 stored, 2000 shown" \
    "$(q 1 "SELECT count() FROM $DB.ev") $(q 1 "SELECT count() FROM $DB.ev FINAL")" "4000 2000"
check "GROUP BY the entity over Distributed FINAL is exact (every call once, 2 events each)" \
    "$(q 2 "SELECT count(), sum(n), max(n) FROM (SELECT tenant, call_id, count() AS n FROM $DB.ev FINAL GROUP BY tenant, call_id)")" "1000	2000	2"

section "JOINs and IN over Distributed tables"
J_COLOCATED="SELECT count(), sum(talk) FROM $DB.ev ALL INNER JOIN (SELECT tenant, call_id, event_id FROM $DB.ev) USING (tenant, call_id, event_id)"
J_CROSS="SELECT count() FROM $DB.ev ALL INNER JOIN (SELECT tenant, contact_id FROM $DB.contacts) USING (tenant, contact_id)"
IN_CROSS="SELECT count() FROM $DB.ev WHERE contact_id IN (SELECT contact_id FROM $DB.contacts WHERE contact_id < 10)"
if [ "$(layout)" = sharded ]; then
    check "a JOIN with a Distributed table on both sides is refused by default (Code 288)" "$(q_err 1 "$J_CROSS")" "Code 288"
    check "an IN (subquery over a Distributed table) too (Code 288)" "$(q_err 1 "$IN_CROSS")" "Code 288"
else
    check "with one shard that is local to the server asked, the same JOIN and IN run without Code 288 (nothing is distributed)" \
        "$(q_err 1 "$J_CROSS") / $(q_err 1 "$IN_CROSS")" "no error / no error"
fi
want_cross=$(q 1 "SELECT count() FROM (SELECT * FROM $DB.ev) ALL INNER JOIN (SELECT tenant, contact_id FROM $DB.contacts) USING (tenant, contact_id)" distributed_product_mode=global)
check "distributed_product_mode='global' (or GLOBAL JOIN / GLOBAL IN) is always right: the right side is computed once and sent to every shard" \
    "$(q 1 "$J_CROSS" distributed_product_mode=global) $(q 1 "${J_CROSS/ALL INNER JOIN/GLOBAL ALL INNER JOIN}")" "$want_cross $want_cross"
check "distributed_product_mode='local' is right for a JOIN on the shard key (co-located rows)" \
    "$(q 1 "$J_COLOCATED" distributed_product_mode=local)" "$(q 1 "$J_COLOCATED" distributed_product_mode=global)"
if [ "$(layout)" = sharded ]; then
    got=$(q 1 "$J_CROSS" distributed_product_mode=local)
    check "distributed_product_mode='local' silently loses rows when the join key is not the shard key ($got of $want_cross)" \
        "$([ "$got" -lt "$want_cross" ] && echo fewer)" fewer
fi
q 1 "CREATE VIEW $DB.calls ON CLUSTER $C AS SELECT tenant, call_id, any(contact_id) AS contact_id, sum(talk) AS talk FROM $DB.ev FINAL GROUP BY tenant, call_id" >/dev/null
q 1 "CREATE VIEW $DB.contact_names ON CLUSTER $C AS SELECT tenant, contact_id, any(name) AS name FROM $DB.contacts FINAL GROUP BY tenant, contact_id" >/dev/null
check "views over Distributed tables join without any setting (the JOIN runs on the initiator), and right" \
    "$(q 2 "SELECT count() FROM $DB.calls ALL INNER JOIN (SELECT tenant, contact_id, name FROM $DB.contact_names) USING (tenant, contact_id)")" 1000

if [ "$(layout)" = sharded ]; then
    section "a duplicate on the wrong shard"
    # Event e0 of call 0 lives on one shard; put a copy straight into the other shard.
    home=$(q 1 "SELECT count() FROM $DB.ev_local WHERE event_id = 'e0'")
    other=$([ "$home" -gt 0 ] && echo 2 || echo 1)
    q "$other" "INSERT INTO $DB.ev_local SELECT 'e0', 't', 0, 0, 10, 3" >/dev/null
    check "FINAL cannot merge rows on two shards: the event shows twice" \
        "$(q 1 "SELECT count() FROM $DB.ev FINAL WHERE event_id = 'e0'")" 2
    check "... so the call's event count is wrong by one in a GROUP BY over all shards" \
        "$(q 1 "SELECT count() FROM $DB.ev FINAL WHERE tenant = 't' AND call_id = 0")" 3
    check "... and a per-shard aggregate (distributed_group_by_no_merge) shows the call twice" \
        "$(q 1 "SELECT count() FROM (SELECT tenant, call_id FROM $DB.ev FINAL WHERE call_id = 0 GROUP BY tenant, call_id)" distributed_group_by_no_merge=1)" 2
fi

if [ "$(layout)" = sharded ]; then
    section "a shard down"
    scripts_dir=$(cd "$(dirname "$0")/.." && pwd)
    "$scripts_dir/cluster-services" kill clickhouse-2 2>/dev/null
    check "reading a Distributed table with a shard down fails (Code 279, all connection tries failed)" "$(q_err 1 "SELECT count() FROM $DB.ev")" "Code 279"
    check "skip_unavailable_shards=1 answers from the shards left: silently partial, never for readers of totals" \
        "$(q 1 "SELECT count() < 4000 FROM $DB.ev" skip_unavailable_shards=1)" 1
    check "a synchronous Distributed insert fails as a whole (Code 279) and is retried later" \
        "$(q_err 1 "INSERT INTO $DB.ev SELECT concat('z', toString(number)), 't', number, 0, 1, 1 FROM numbers(10)" insert_distributed_sync=1)" "Code 279"
    "$scripts_dir/cluster-services" up clickhouse-2 2>/dev/null
fi
drop_db $DB
finish
