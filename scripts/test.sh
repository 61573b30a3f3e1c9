#!/usr/bin/env bash
# Runs every check and test of the project on a fresh machine: installs what is missing,
# starts Kafka and ClickHouse (scripts/dev-services), then formatting, lints, unit,
# integration and end-to-end tests, and the compose file check. Services this script
# started are stopped at the end; services that were already running are left alone.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf '\n==> %s\n' "$*" >&2; }

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
apt_updated=0
apt_install() {
    if [ $apt_updated -eq 0 ]; then $SUDO apt-get update -qq >/dev/null; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

log "toolchain"
command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
command -v cc >/dev/null && command -v make >/dev/null || apt_install build-essential
command -v docker-compose >/dev/null || apt_install docker-compose

log "services"
# Read the status whole first: `grep -q` in a pipeline under pipefail can fail on SIGPIPE.
status=$(scripts/dev-services status)
started_here=0
case "$status" in *"kafka: running"*) ;; *) started_here=1 ;; esac
case "$status" in *"clickhouse: running"*) ;; *) started_here=1 ;; esac
chdb_started_here=0
case "$status" in *"chdb: running"*) ;; *) chdb_started_here=1 ;; esac
stop_services() {
    if [ $started_here -eq 1 ]; then scripts/dev-services down; fi
    if [ $chdb_started_here -eq 1 ]; then scripts/dev-services down chdb; fi
}
if [ "${KEEP_SERVICES:-0}" != 1 ]; then
    trap stop_services EXIT
fi
scripts/dev-services up
# The current ClickHouse engine behind the HTTP interface (a test fixture; see README).
scripts/dev-services up chdb
set -a
# shellcheck disable=SC1091
. "$ROOT/.dev-services.env"
set +a

log "shell scripts parse"
for script in scripts/dev-services scripts/run-stack scripts/test.sh scripts/bench-ingest scripts/bench-pipeline scripts/stress-ingest scripts/chaos .ci/run \
    scripts/cluster-services scripts/cluster-test scripts/cluster/check-sql scripts/cluster/lib.sh \
    scripts/cluster/facts-*.sh scripts/cluster/kafka-cli scripts/cluster/zk; do
    bash -n "$script"
done
python3 -m py_compile scripts/cluster/cluster_ddl.py scripts/cluster/same_answers.py scripts/cluster/kafka_durability.py

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test (unit, integration, end to end against $KAFKA_BROKERS and $CLICKHOUSE_URL)"
cargo test --workspace --locked

log "fuzz, short run (the canonical text behind event ids; the webhook handler with arbitrary requests)"
# cargo-fuzz needs a nightly toolchain: both are installed when missing and kept in
# ~/.rustup and ~/.cargo/bin for the next run. Not being able to build or run a target
# fails the script. Without a sanitizer: the crates forbid unsafe code, and the run is
# about panics and broken contracts, not memory errors. New inputs go to .cache/fuzz.
toolchains=$(rustup toolchain list)
case "$toolchains" in *nightly*) ;; *) rustup toolchain install nightly --profile minimal ;; esac
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
for target in canonical http; do
    seeds=()
    [ -d "fuzz/corpus/$target" ] && seeds=("fuzz/corpus/$target")
    mkdir -p ".cache/fuzz/$target"
    cargo +nightly fuzz run --sanitizer none "$target" \
        ".cache/fuzz/$target" "${seeds[@]}" -- -max_total_time="${FUZZ_SECONDS:-30}"
done

log "chaos harness, short run (SIGKILL of each service and the broker, ClickHouse stopped 10 s)"
scripts/chaos --events 3000 --rate 100 --clickhouse-outage-s 10 --broker-outage-s 5

log "end-to-end tests whose behaviour differs by server version, on a current engine (chdb at $CHDB_URL)"
CLICKHOUSE_URL=$CHDB_URL cargo test -p tests --locked \
    --test call_ended --test bad_rows --test crash_restart --test replay --test topic_reset \
    --test schema_version --test erasure --test retention --test field_discovery

log "chaos harness, short run on the current engine (inserts stored twice counted too)"
scripts/chaos --events 3000 --rate 100 --clickhouse-outage-s 10 --broker-outage-s 5 --clickhouse-service chdb

log "SQL, dashboards and analytics on ClickHouse 18.16 and on a current engine (chdb)"
cargo build --locked -q --bins
export SIMULATE_BIN=$ROOT/target/debug/simulate
VENV=$ROOT/.cache/venv
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || { apt_install python3-venv && python3 -m venv "$VENV"; }
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r sqlcheck/requirements.txt
"$VENV/bin/python" -m pytest -q sqlcheck

log "cluster mode, short run: ZooKeeper, three Kafka brokers, two ClickHouse 18.16 servers as 2 shards (scripts/cluster-test --layout sharded; both layouts: scripts/cluster-test)"
# One layout fits the time budget: the sharded one, where a server killed mid-insert is
# its shard's only copy (the case that once left calls out of calls_state). Its own
# ports and state (.cluster-services/); the cluster is stopped at the end.
scripts/cluster-test --layout sharded

log "docker-compose config"
docker-compose -f docker-compose.yml config -q
docker-compose -f docker-compose.yml -f docker-compose.cluster.yml config -q
echo "docker-compose.yml (alone and with docker-compose.cluster.yml) is valid"
