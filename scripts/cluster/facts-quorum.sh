#!/usr/bin/env bash
# Replicas that lag or die, on ClickHouse 18.16 with 1 shard x 2 replicas (replicated
# layout only): replication delay; reads through Distributed around a lagging or dead
# replica; insert_quorum (Codes 285, 286, 319) and select_sequential_consistency.
# Kills and restarts clickhouse-2.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SERVICES=$ROOT/scripts/cluster-services
DB=fact_quorum
[ "$(layout)" = replicated ] || { echo "facts-quorum.sh: needs the replicated layout (1 shard x 2 replicas); skipped"; exit 0; }

fresh_db $DB
q 1 "CREATE TABLE $DB.b_local ON CLUSTER $C (k UInt64, v UInt64)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/$DB.b', '{replica}') ORDER BY k" >/dev/null
q 1 "CREATE TABLE $DB.b ON CLUSTER $C (k UInt64, v UInt64) ENGINE = Distributed($C, $DB, b_local, k)" >/dev/null
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
count() { q "$1" "SELECT count() FROM $DB.b_local" "${@:2}"; }

section "replication delay and reads around a lagging replica"
delays=
for i in 1 2 3 4 5; do
    n=$(count 2); insert 1 $DB.b_local TSV "$i	1"; t=$(date +%s%N)
    until [ "$(count 2)" -gt "$n" ]; do :; done
    delays+="$(ms "$t") "
done
note "a part inserted on ch1 is on ch2 this many ms after the insert returned: $delays"
q 2 "SYSTEM STOP FETCHES $DB.b_local" >/dev/null
insert 1 $DB.b_local TSV $'100\t1'
sleep 2.5
check "ch2 without fetches lags (system.replicas.absolute_delay >= 2 s); a read through Distributed on ch2 answers from its own stale replica" \
    "$(q 2 "SELECT absolute_delay >= 2 FROM system.replicas WHERE database = '$DB'") $(q 2 "SELECT count() FROM $DB.b WHERE k = 100")" "1 0"
check "... unless max_replica_delay_for_distributed_queries=1: then the query goes to the up-to-date replica" \
    "$(q 2 "SELECT count() FROM $DB.b WHERE k = 100" max_replica_delay_for_distributed_queries=1 fallback_to_stale_replicas_for_distributed_queries=0)" 1
check "select_sequential_consistency=1 does not help here: it covers only parts whose quorum insert succeeded" \
    "$(q 2 "SELECT count() FROM $DB.b_local WHERE k = 100" select_sequential_consistency=1)" 0

section "insert_quorum=2"
start=$(date +%s%N)
check "a quorum insert while ch2 fetches nothing: waits insert_quorum_timeout (3 s here), then Code 319 'Unknown status, client must retry'" \
    "$(q_err 1 "INSERT INTO $DB.b_local VALUES (200, 1)" insert_quorum=2 insert_quorum_timeout=3000)" "Code 319"
note "after $(ms "$start") ms: $(last_error 160)"
check "... the rows are in ch1 all the same (the part is written; only its quorum is missing)" "$(q 1 "SELECT count() FROM $DB.b_local WHERE k = 200")" 1
check "every other quorum insert into the table is refused while that quorum is open (Code 286)" \
    "$(q_err 1 "INSERT INTO $DB.b_local VALUES (201, 1)" insert_quorum=2 insert_quorum_timeout=3000)" "Code 286"
q 2 "SYSTEM START FETCHES $DB.b_local" >/dev/null
q 2 "SYSTEM SYNC REPLICA $DB.b_local" >/dev/null
check "once ch2 fetched the part the quorum is complete and quorum inserts work again" \
    "$(q_err 1 "INSERT INTO $DB.b_local VALUES (201, 1)" insert_quorum=2)" "no error"
conflicts=0
for i in $(seq 1 10); do
    q_err 1 "INSERT INTO $DB.b_local VALUES ($((300 + i)), 1)" insert_quorum=2 >"$LAST_ERROR_FILE.a" &
    q_err 2 "INSERT INTO $DB.b_local VALUES ($((400 + i)), 1)" insert_quorum=2 >"$LAST_ERROR_FILE.b"
    wait
    for f in "$LAST_ERROR_FILE.a" "$LAST_ERROR_FILE.b"; do [ "$(cat "$f")" = "Code 286" ] && conflicts=$((conflicts + 1)); done
done
rm -f "$LAST_ERROR_FILE.a" "$LAST_ERROR_FILE.b"
check "18.16 allows one open quorum per table: of 10 pairs of concurrent quorum inserts, 10 inserts got Code 286" "$conflicts" 10
start=$(date +%s%N)
insert 1 $DB.b_local TSV $'500\t1' insert_quorum=2
note "a quorum insert with both replicas up takes $(ms "$start") ms"

section "a replica SIGKILLed"
"$SERVICES" kill clickhouse-2 2>/dev/null
killed=$(date +%s%N)
check "insert through Distributed on ch1 without quorum: accepted by the live replica" \
    "$(q_err 1 "INSERT INTO $DB.b VALUES (600, 1)" insert_distributed_sync=1)" "no error"
check "read through Distributed: answered by the live replica" "$(q 1 "SELECT count() FROM $DB.b WHERE k = 600")" 1
got=$(q_err 1 "INSERT INTO $DB.b_local VALUES (601, 1)" insert_quorum=2 insert_quorum_timeout=3000)
note "quorum insert $(ms "$killed") ms after the kill, while ch2's ZooKeeper session (10 s) still looks alive: $got ($(last_error 120))"
until [ "$(q 1 "SELECT count() FROM system.zookeeper WHERE path = '/clickhouse/tables/01/$DB.b/replicas/ch2' AND name = 'is_active'")" = 0 ]; do sleep 0.5; done
note "ch2's is_active node disappeared $(ms "$killed") ms after the kill (its session timed out)"
got=$(q_err 1 "INSERT INTO $DB.b_local VALUES (602, 1)" insert_quorum=2 insert_quorum_timeout=3000)
check "after that a quorum insert is refused at once: Code 285 (too few live replicas), or 286 while the quorum of a part written before is still open" \
    "$(case "$got" in "Code 285"|"Code 286") echo refused ;; *) echo "$got" ;; esac)" refused
note "$got: $(last_error 140)"
check "the quorum insert through Distributed is refused the same way" \
    "$(case "$(q_err 1 "INSERT INTO $DB.b VALUES (603, 1)" insert_distributed_sync=1 insert_quorum=2)" in "Code 285"|"Code 286") echo refused ;; *) echo no ;; esac)" refused
"$SERVICES" up clickhouse-2 2>/dev/null
back=$(date +%s%N)
until [ "$(q_err 1 "INSERT INTO $DB.b_local VALUES (604, 1)" insert_quorum=2 insert_quorum_timeout=3000)" = "no error" ]; do sleep 0.2; done
note "quorum inserts work again $(ms "$back") ms after ch2 answered its first ping"
q 2 "SYSTEM SYNC REPLICA $DB.b_local" >/dev/null
check "ch2 caught up with everything written while it was down" "$(count 2)" "$(count 1)"
drop_db $DB
finish
