#!/usr/bin/env bash
# ZooKeeper paths of Replicated tables on ClickHouse 18.16, and how they go stale:
#  * ON CLUSTER DDL with a server down: the statement times out (Code 159) but stays
#    queued, and the server runs it when it is back;
#  * a database dropped and created again while a replica is down keeps the table's old
#    ZooKeeper path, block ids included: re-inserting old data is silently dropped;
#  * a replica whose disk was lost cannot be created again (Code 253) until its node is
#    deleted from ZooKeeper (18.16 has no SYSTEM DROP REPLICA); then it clones the data.
# Kills and restarts clickhouse-2. Either layout (the last two need the replicated one).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SERVICES=$ROOT/scripts/cluster-services
DB=fact_zk
T_PATH=/clickhouse/tables/01/$DB.t

fresh_db $DB
q 1 "CREATE TABLE $DB.t ON CLUSTER $C (k UInt64) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/$DB.t', '{replica}') ORDER BY k" >/dev/null

section "ON CLUSTER DDL while a server is down"
"$SERVICES" kill clickhouse-2 2>/dev/null
start=$SECONDS
check "CREATE ... ON CLUSTER with a server down waits distributed_ddl_task_timeout (5 s here), then Code 159" \
    "$(q_err 1 "CREATE TABLE IF NOT EXISTS $DB.u ON CLUSTER $C (k UInt64) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/$DB.u', '{replica}') ORDER BY k" distributed_ddl_task_timeout=5)" "Code 159"
note "$(last_error 300) (after $((SECONDS - start)) s)"
check "the servers that are up ran it" "$(q 1 "EXISTS TABLE $DB.u")" 1
"$SERVICES" up clickhouse-2 2>/dev/null
start=$SECONDS
until [ "$(q 2 "EXISTS TABLE $DB.u" 2>/dev/null)" = 1 ] || [ $((SECONDS - start)) -gt 60 ]; do sleep 0.5; done
check "the server that was down runs the queued statement when it is back ($((SECONDS - start)) s after its start)" "$(q 2 "EXISTS TABLE $DB.u")" 1

if [ "$(layout)" = replicated ]; then
    section "a database dropped and created again while a replica is down"
    insert 1 $DB.t TSV $'1\n2\n3'
    q 2 "SYSTEM SYNC REPLICA $DB.t" >/dev/null
    "$SERVICES" kill clickhouse-2 2>/dev/null
    q_err 1 "DROP DATABASE $DB ON CLUSTER $C" distributed_ddl_task_timeout=3 >/dev/null
    check "after DROP DATABASE with replica ch2 down, the table's ZooKeeper path is still there (ch2 is registered)" "$(zk_children $T_PATH/replicas)" "ch2"
    q_err 1 "CREATE DATABASE $DB ON CLUSTER $C" distributed_ddl_task_timeout=3 >/dev/null
    q_err 1 "CREATE TABLE $DB.t ON CLUSTER $C (k UInt64) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/$DB.t', '{replica}') ORDER BY k" distributed_ddl_task_timeout=3 >/dev/null
    check "the new table on ch1 joins the old path as a replica again" "$(zk_children $T_PATH/replicas)" "ch1 ch2"
    insert 1 $DB.t TSV $'1\n2\n3'
    check "... and the same rows inserted into the new, empty table are silently dropped as duplicates of the old block" "$(q 1 "SELECT count() FROM $DB.t")" 0
    "$SERVICES" up clickhouse-2 2>/dev/null
    sleep 3
    note "when ch2 is back it replays DROP, CREATE, CREATE: ch1 has $(q 1 "SELECT count() FROM $DB.t") rows, ch2 $(q 2 "SELECT count() FROM $DB.t" 2>/dev/null || echo '?') rows"
    drop_db $DB

    section "a replica that lost its disk"
    fresh_db $DB
    q 1 "CREATE TABLE $DB.t ON CLUSTER $C (k UInt64) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/$DB.t', '{replica}') ORDER BY k" >/dev/null
    insert 1 $DB.t TSV $'1\n2\n3'
    q 2 "SYSTEM SYNC REPLICA $DB.t" >/dev/null
    "$SERVICES" kill clickhouse-2 2>/dev/null
    data=$ROOT/.cluster-services/clickhouse-2/data
    rm -rf "$data/metadata/$DB" "$data/metadata/$DB.sql" "$data/data/$DB"
    "$SERVICES" up clickhouse-2 2>/dev/null
    q 2 "CREATE DATABASE IF NOT EXISTS $DB" >/dev/null
    check "creating the table again on the wiped server fails: its replica node still exists (Code 253)" \
        "$(q_err 2 "CREATE TABLE $DB.t (k UInt64) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/$DB.t', '{replica}') ORDER BY k")" "Code 253"
    note "$(last_error 200)"
    "$ROOT/scripts/cluster/zk" deleteall $T_PATH/replicas/ch2 >/dev/null 2>&1
    q 2 "CREATE TABLE $DB.t (k UInt64) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/$DB.t', '{replica}') ORDER BY k" >/dev/null
    q 2 "SYSTEM SYNC REPLICA $DB.t" >/dev/null
    check "after \`scripts/cluster/zk deleteall $T_PATH/replicas/ch2\` it is created and clones the data from ch1" "$(q 2 "SELECT count() FROM $DB.t")" 3
fi
drop_db $DB
finish
