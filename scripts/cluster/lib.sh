# shellcheck shell=bash
# Helpers for the checks under scripts/cluster/ (sourced, not run). They talk to the
# servers that scripts/cluster-services started, reading .cluster-services.env.
#
#   q N SQL            runs SQL on ClickHouse server N (1 or 2) over HTTP; fails on an error
#   q_err N SQL        runs SQL that must fail; prints the ClickHouse error code (e.g. 285)
#   check WHAT GOT WANT     one assertion, printed as "ok" or "FAIL"
#   fresh_db NAME      drops NAME on the cluster (ON CLUSTER) and creates it again
#   layout             replicated or sharded
#   finish             prints the tally; exit status 1 when any check failed

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ENV_FILE=$ROOT/.cluster-services.env
[ -f "$ENV_FILE" ] || { echo "no $ENV_FILE: run scripts/cluster-services up first" >&2; exit 2; }
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a
IFS=, read -r -a CH_URLS <<<"$CLICKHOUSE_URLS"
C=$CLICKHOUSE_CLUSTER

PASSED=0
FAILED=0

layout() { echo "$CLUSTER_LAYOUT"; }

url_of() { echo "${CH_URLS[$(($1 - 1))]}"; }

# q N SQL [SETTINGS as name=value...]: the answer (TSV), or exit 1 with the server's error.
q() {
    local n=$1 sql=$2; shift 2
    local params="max_execution_time=60" s out code
    for s in "$@"; do params+="&$s"; done
    out=$(curl -sS --max-time 300 -w '\n%{http_code}' "$(url_of "$n")/?$params" --data-binary "$sql") || {
        echo "server $n unreachable for: $sql" >&2; return 1; }
    code=${out##*$'\n'}
    out=${out%$'\n'*}
    out=${out%$'\n'}
    if [ "$code" != 200 ]; then
        printf 'server %s refused (HTTP %s): %s\n  %s\n' "$n" "$code" "$sql" "$out" >&2
        return 1
    fi
    [ -z "$out" ] || printf '%s\n' "$out"
}

# q_err N SQL [SETTINGS...]: runs SQL that is expected to fail, prints "Code N" (or "no
# error"); `last_error` prints the whole message afterwards (also from a $(...) call).
LAST_ERROR_FILE=$(mktemp)
trap 'rm -f "$LAST_ERROR_FILE"' EXIT
last_error() { sed -e 's/, e.what() = DB::[A-Za-z]*Exception//g' "$LAST_ERROR_FILE" | head -c "${1:-400}"; echo; }
q_err() {
    local n=$1 sql=$2; shift 2
    local params="max_execution_time=60" s out code
    for s in "$@"; do params+="&$s"; done
    out=$(curl -sS --max-time 300 -w '\n%{http_code}' "$(url_of "$n")/?$params" --data-binary "$sql" 2>&1) || true
    code=${out##*$'\n'}
    out=${out%$'\n'*}
    printf '%s' "$out" >"$LAST_ERROR_FILE"
    if [ "$code" = 200 ]; then echo "no error"; return; fi
    local c; c=$(printf '%s' "$out" | grep -o 'Code: [0-9]*' | head -n 1 | cut -d' ' -f2)
    echo "Code ${c:-? (HTTP $code)}"
}

# insert N TABLE FORMAT DATA [SETTINGS...]: an INSERT whose data is sent as the body.
insert() {
    local n=$1 table=$2 format=$3 data=$4; shift 4
    local params="max_execution_time=60" s
    for s in "$@"; do params+="&$s"; done
    local query; query=$(printf 'INSERT INTO %s FORMAT %s' "$table" "$format" | sed 's/ /%20/g')
    local out code
    out=$(printf '%s' "$data" | curl -sS --max-time 300 -w '\n%{http_code}' "$(url_of "$n")/?$params&query=$query" --data-binary @-) || return 1
    code=${out##*$'\n'}
    out=${out%$'\n'*}
    if [ "$code" != 200 ]; then
        printf 'insert into %s on server %s refused (HTTP %s): %s\n' "$table" "$n" "$code" "$out" >&2
        return 1
    fi
}

check() {
    local what=$1 got=$2 want=$3
    if [ "$got" = "$want" ]; then
        printf '  ok    %s\n' "$what"
        PASSED=$((PASSED + 1))
    else
        printf '  FAIL  %s\n        got:  %s\n        want: %s\n' "$what" "$got" "$want"
        FAILED=$((FAILED + 1))
    fi
}

note() { printf '  note  %s\n' "$*"; }
section() { printf '\n== %s (layout %s)\n' "$*" "$(layout)"; }

fresh_db() {
    q 1 "DROP DATABASE IF EXISTS $1 ON CLUSTER $C" >/dev/null
    q 1 "CREATE DATABASE $1 ON CLUSTER $C" >/dev/null
}

drop_db() { q 1 "DROP DATABASE IF EXISTS $1 ON CLUSTER $C" >/dev/null; }

# The shard number (1-based) server N serves.
shard_of() { if [ "$(layout)" = sharded ]; then echo "$1"; else echo 1; fi; }

# zk_children PATH: the names under PATH in ZooKeeper, sorted, space-separated ("" if none).
zk_children() {
    q 1 "SELECT name FROM system.zookeeper WHERE path = '$1' ORDER BY name" 2>/dev/null | tr '\n' ' ' | sed 's/ $//'
}

finish() {
    printf '\n%s: %d passed, %d failed\n' "$(basename "$0")" "$PASSED" "$FAILED"
    [ "$FAILED" -eq 0 ]
}
