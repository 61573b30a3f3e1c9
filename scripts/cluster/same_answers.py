#!/usr/bin/env python3
"""Cluster mode gives the answers of a single node: applies the migrations as they are
(single node, database only on server 1) and as cluster_ddl.py rewrites them (ON CLUSTER,
Replicated + Distributed, both read designs), loads the same traffic into all three (the
rows `simulate rows` writes, with the sender's duplicates, swaps, replays and a redone
block, through the loader model of sqlcheck/ into the 0007 tables, whose materialized
views fill the aggregate states; in the cluster each block goes in through alternating
servers and every 5th block twice), then compares every storage table, every view, every
file of sql/analytics/ and every Grafana panel and variable query, row for row. Also
checks shard placement: every entity's rows on exactly one shard (sharded layout), or on
both replicas (replicated layout).

    scripts/cluster/same_answers.py [--hours 24] [--seed 1] [--keep] [--timing]

Reads .cluster-services.env (scripts/cluster-services up); needs the `simulate` binary
(SIMULATE_BIN, default target/debug/simulate). Exit status 1 on any difference.
"""

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "sqlcheck"))
from cluster_ddl import MIGRATIONS, PLACED_BY_SOURCE, SHARD_KEYS, cluster_statements, statements  # noqa: E402
from grafana import ANALYTICS, DASHBOARDS, clickhouse_panels, expand, resolve  # noqa: E402
from loader_model import Loader  # noqa: E402
from traffic import derive, simulate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent
ENV = dict(
    line.split("=", 1) for line in (ROOT / ".cluster-services.env").read_text().splitlines() if "=" in line
)
URLS = ENV["CLICKHOUSE_URLS"].split(",")
CLUSTER = ENV["CLICKHOUSE_CLUSTER"]
LAYOUT = ENV["CLUSTER_LAYOUT"]
NOW = int(time.time())
FROM, TO = NOW - 86_400, NOW
# Tenants of the traffic, each with its own seed offset.
TENANTS = (("demo", 0), ("acme", 6))
# Filled by a materialized view over per-delivery rows (placed by event), so a (tenant,
# day) or a path's state may be on every shard, by design: compared by distinct keys, not
# placed by their own key.
VIEW_FED_ELSEWHERE = {
    "tenant_days": "tenant, day",
    "unmapped_fields_state": "tenant, event, kind, path, expected, found, day",
}
assert set(VIEW_FED_ELSEWHERE) == set(PLACED_BY_SOURCE), "cluster_ddl.PLACED_BY_SOURCE changed"


class Refused(Exception):
    pass


def q(sql, server=1, data=None, **settings):
    params = {"max_execution_time": 120, **settings}
    if data is not None:
        params["query"] = sql
        body = data.encode()
    else:
        body = sql.encode()
    url = URLS[server - 1] + "/?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, data=body, timeout=300) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        raise Refused(e.read().decode().strip()) from None


def rows(sql, server=1, **settings):
    out = q(sql + "\nFORMAT TSV", server, **settings)
    return [tuple(line.split("\t")) for line in out.splitlines()]


def dicts(sql, server=1, **settings):
    out = q(sql + "\nFORMAT JSONEachRow", server, output_format_json_quote_64bit_integers=0, **settings)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# --- traffic ----------------------------------------------------------------------------------

def traffic(hours, seed):
    """The blocks the loader would insert (table -> rows, in the 0007 tables), in order,
    and the entity keys it would have recorded."""
    blocks = []
    for tenant, offset in TENANTS:
        tables = simulate(tenant, hours, seed + offset)
        blocks.extend(derive(tables, seed=seed + offset))
    loader = Loader()
    out = [loader.batch(block) for block in blocks]
    out.append({"entity_keys": loader.entity_keys()})
    return out


def json_rows(rows_):
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows_)


# --- databases -----------------------------------------------------------------------------

def create(single, over_dist, per_shard):
    q(f"CREATE DATABASE {single}")
    for path in MIGRATIONS:
        for sql in statements(path, single):
            q(sql)
    for db, views in ((over_dist, "over-distributed"), (per_shard, "per-shard")):
        for _name, stmts in cluster_statements(db, CLUSTER, views):
            for sql in stmts:
                q(sql)


def load(blocks, single, clusters):
    """The same blocks into every database: into the cluster as Distributed inserts
    (synchronous) through alternating servers, every 5th block twice, the second time
    through the other server, as a loader redoing a block after a crash would."""
    for b, block in enumerate(blocks):
        for name, data in block.items():
            if not data:
                continue
            body = json_rows(data)
            insert = f"INSERT INTO {{db}}.{name} FORMAT JSONEachRow"
            q(insert.format(db=single), 1, body)
            for db in clusters:
                server = 1 + b % 2
                q(insert.format(db=db), server, body, insert_distributed_sync=1)
                if b % 5 == 0:
                    q(insert.format(db=db), 3 - server, body, insert_distributed_sync=1)


# --- comparison ----------------------------------------------------------------------------

def same(a, b, approximate=False):
    """Equal row sets; numbers equal up to float rounding, or, for queries with an
    approximate aggregate (`quantile` samples 8192 values, so beyond that its answer
    depends on the order rows arrive in: another order of parts, threads or shards gives
    another sample, on one server too), within 5% or 1."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(sorted(a), sorted(b)):
        if len(ra) != len(rb):
            return False
        for x, y in zip(ra, rb):
            if x == y:
                continue
            try:
                fx, fy = float(x), float(y)
            except ValueError:
                return False
            tolerance = max(1.0, 0.05 * abs(fy)) if approximate else 1e-9 * max(1.0, abs(fx), abs(fy))
            if abs(fx - fy) > tolerance:
                return False
    return True


def approximate(sql):
    return bool(re.search(r"\bquantiles?\(", sql))


def queries():
    """(name, sql with `switchboard.`, dashboard whose variables it needs) for everything
    readers run."""
    out = []
    for path in ANALYTICS:
        out.append((f"sql/analytics/{path.name}", path.read_text(), None))
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for var in dash["templating"]["list"]:
            if var["type"] == "query":
                out.append((f"{path.stem} variable {var['name']}", var["query"], dash))
        for title, sql in clickhouse_panels(dash):
            out.append((f"{path.stem}: {title}", sql, dash))
    return out


def reader_sql(sql, dash, db, settings, resolved={}):  # noqa: B006 - a cache on purpose
    """A reader's query for `db`, with Grafana's macros and variables expanded (the
    variables resolved once per dashboard and database)."""
    if dash is None:
        return sql.replace("switchboard.", f"{db}.")
    key = (dash["uid"] if "uid" in dash else id(dash), db)
    if key not in resolved:
        resolved[key] = resolve(lambda text: dicts(text, **settings), dash, FROM, TO, db)
    return expand(sql, resolved[key], FROM, TO, db)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=int, default=24, help="hours of simulated traffic per tenant, ending now")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    ap.add_argument("--timing", action="store_true", help="time each reader query in the three databases")
    a = ap.parse_args()
    tag = f"{int(time.time()) % 100000}"
    single, over_dist, per_shard = f"sa_single_{tag}", f"sa_dist_{tag}", f"sa_shard_{tag}"
    failures = 0

    def check(what, ok, detail=""):
        nonlocal failures
        print(f"  {'ok  ' if ok else 'FAIL'}  {what}{'' if ok else ': ' + detail}")
        failures += 0 if ok else 1

    print(f"== same answers, layout {LAYOUT}: {single} (single node) vs {over_dist} (views over Distributed) and {per_shard} (Distributed over per-shard views)")
    t0 = time.time()
    create(single, over_dist, per_shard)
    blocks = traffic(a.hours, a.seed)
    load(blocks, single, [over_dist, per_shard])
    loaded = sum(len(r) for block in blocks for r in block.values())
    print(f"  loaded {loaded} rows in {len(blocks)} blocks per database in {time.time() - t0:.1f} s")
    engines = dict(rows(f"SELECT name, engine FROM system.tables WHERE database = '{single}' "
                        f"AND engine LIKE '%MergeTree' AND name != 'schema_migrations' ORDER BY name"))
    tables = sorted(engines)
    if LAYOUT == "replicated":
        for db in (over_dist, per_shard):
            for name in tables:
                for server in (1, 2):
                    q(f"SYSTEM SYNC REPLICA {db}.{name}_local", server)

    # Storage: each shard collapses its own duplicates, so FINAL over Distributed counts
    # each key once (a table fed from rows placed by another key: its distinct keys).
    for name in tables:
        # A plain MergeTree (the erasures audit) has no FINAL and nothing to collapse.
        final = "" if engines[name] == "MergeTree" else " FINAL"
        count = (f"SELECT count() FROM (SELECT DISTINCT {VIEW_FED_ELSEWHERE[name]} FROM {{db}}.{name})"
                 if name in VIEW_FED_ELSEWHERE else f"SELECT count() FROM {{db}}.{name}{final}")
        want = rows(count.format(db=single))
        got = rows(count.format(db=over_dist))
        check(f"{name}: FINAL row count equal ({want[0][0]})", got == want, f"{got} vs {want}")
    check("the traffic reached the 0007 tables and their states",
          all(int(rows(f"SELECT count() FROM {single}.{name}")[0][0]) > 0
              for name in ("raw_events_store_v2", "call_events_store_v2", "calls_state", "messages_state")))

    # Placement: an entity's rows on one shard only (sharded), on both replicas (replicated).
    for name, key in SHARD_KEYS.items():
        if name not in tables or name in VIEW_FED_ELSEWHERE:
            continue
        entity = re.sub(r"^cityHash64\((.*)\)$", r"\1", key)
        total = set(rows(f"SELECT DISTINCT {entity} FROM {single}.{name}"))
        if not total:
            continue
        per_server = [set(rows(f"SELECT DISTINCT {entity} FROM {over_dist}.{name}_local", s)) for s in (1, 2)]
        if LAYOUT == "sharded":
            check(f"{name}: every ({entity}) on exactly one shard ({len(per_server[0])} + {len(per_server[1])} = {len(total)})",
                  not (per_server[0] & per_server[1]) and per_server[0] | per_server[1] == total)
        else:
            check(f"{name}: both replicas hold every ({entity}) ({len(total)})", per_server[0] == per_server[1] == total)

    views = [r[0] for r in rows(f"SELECT name FROM system.tables WHERE database = '{single}' AND engine = 'View' ORDER BY name")]
    for view in views:
        want = rows(f"SELECT * FROM {single}.{view}")
        for db, server in ((over_dist, 2), (per_shard, 1)):
            got = rows(f"SELECT * FROM {db}.{view}", server)
            check(f"view {view} ({db.split('_')[1]}, {len(want)} rows)", same(got, want), f"{len(got)} rows vs {len(want)}")

    timings = []
    for name, sql, dash in queries():
        results = {}
        for db, settings in ((single, {}), (over_dist, {}), (per_shard, {"distributed_product_mode": "global"})):
            start = time.time()
            try:
                results[db] = rows(reader_sql(sql, dash, db, settings), **settings)
            except Refused as e:
                results[db] = f"refused: {str(e)[:160]}"
            timings.append((name, db, time.time() - start))
        want = results[single]
        for db in (over_dist, per_shard):
            got = results[db]
            ok = not isinstance(got, str) and not isinstance(want, str) and same(got, want, approximate(sql))
            check(f"{name} ({db.split('_')[1]}, {len(want) if not isinstance(want, str) else want} rows"
                  f"{', quantile within 5%' if approximate(sql) else ''})", ok,
                  got if isinstance(got, str) else f"{len(got)} rows vs {len(want)}: {sorted(got)[:2]} vs {sorted(want)[:2]}")
    # Without the profile setting, the per-shard design refuses JOINs of Distributed tables
    # (with more than one shard; one local shard is not distributed at all).
    if LAYOUT == "sharded":
        try:
            rows((ROOT / "sql" / "analytics" / "10_agent_leaderboard.sql").read_text().replace("switchboard.", f"{per_shard}."))
            check("per-shard views: a JOIN without distributed_product_mode is refused (Code 288)", False, "it ran")
        except Refused as e:
            check("per-shard views: a JOIN without distributed_product_mode is refused (Code 288)", "Code: 288" in str(e), str(e)[:200])

    if a.timing:
        print("\n  seconds per reader query: single / views over Distributed / Distributed over per-shard views")
        by = {}
        for name, db, s in timings:
            by.setdefault(name, {})[db] = s
        total = [0.0, 0.0, 0.0]
        for name, d in by.items():
            vals = [d[single], d[over_dist], d[per_shard]]
            total = [x + y for x, y in zip(total, vals)]
            print(f"  {vals[0]:7.3f} {vals[1]:7.3f} {vals[2]:7.3f}  {name}")
        print(f"  {total[0]:7.3f} {total[1]:7.3f} {total[2]:7.3f}  all")

    if not a.keep:
        q(f"DROP DATABASE IF EXISTS {single}")
        for db in (over_dist, per_shard):
            q(f"DROP DATABASE IF EXISTS {db} ON CLUSTER {CLUSTER}")
    print(f"\nsame_answers: {'OK' if failures == 0 else f'{failures} FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
