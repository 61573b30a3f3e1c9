#!/usr/bin/env python3
"""Cluster mode gives the answers of a single node: applies the migrations as they are
(single node, database only on server 1) and as cluster_ddl.py rewrites them (ON CLUSTER,
Replicated + Distributed, both read designs), loads the same seeded call-center rows into
all three (with sender duplicates and re-sent blocks), then compares every view, every
file of sql/analytics/ and every Grafana panel and variable query, row for row. Also
checks shard placement: every entity's rows are on exactly one shard (sharded layout),
or on both replicas (replicated layout).

    scripts/cluster/same_answers.py [--calls 3000] [--seed 1] [--keep] [--timing]

Reads .cluster-services.env (scripts/cluster-services up). Exit status 1 on any difference.
"""

import argparse
import hashlib
import json
import random
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_ddl import MIGRATIONS, SHARD_KEYS, cluster_statements, statements  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent
ENV = dict(
    line.split("=", 1) for line in (ROOT / ".cluster-services.env").read_text().splitlines() if "=" in line
)
URLS = ENV["CLICKHOUSE_URLS"].split(",")
CLUSTER = ENV["CLICKHOUSE_CLUSTER"]
LAYOUT = ENV["CLUSTER_LAYOUT"]
ANALYTICS = sorted((ROOT / "sql" / "analytics").glob("*.sql"))
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
# The storage tables the loader writes (warehouse::Table); SHARD_KEYS also names tables of
# later migrations and the block log.
STORE_TABLES = ["raw_events_store", "call_events_store", "contact_events_store",
                "contact_list_events_store", "message_events_store", "dead_letters_store"]
NOW = int(time.time())
FROM, TO = NOW - 86_400, NOW


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


# --- seeded traffic -------------------------------------------------------------------------

TENANTS = [("acme", -18000), ("globex", 3600), ("initech", 0)]
AGENTS = ["Dev Patel", "Lena Berg", "Ana Ruiz", "Tom Okafor", "Mia Chen", "Sam Lee"]
DISPOSITIONS = ["RESOLVED", "CALLBACK", "SALE", "NO_SALE", "WRONG_NUMBER"]
RING_GROUPS = ["Sales", "Support", "Billing"]
CAMPAIGNS = ["Spring promo", "Renewals"]


def ts(ms):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000))


def eid(*parts):
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def generate(calls, seed):
    """Rows per storage table (dicts with every insertable column, values chosen here)."""
    rnd = random.Random(seed)
    t = {name: [] for name in STORE_TABLES}
    base_ms = (NOW - 20 * 3600) * 1000

    def raw(tenant, event, entity, entity_id, ms, status="normalized"):
        event_id = eid(tenant, event, entity, entity_id, ms)
        t["raw_events_store"].append(dict(
            event_id=event_id, tenant=tenant, event=event, status=status, entity=entity,
            entity_id=str(entity_id), received_at=ts(ms), received_at_ms=ms, source_addr="10.0.0.1",
            payload=json.dumps({"id": entity_id}), error="", loaded_at=ts(ms + 1500)))
        return event_id

    for i in range(calls):
        tenant, offset = rnd.choice(TENANTS)
        call_id = rnd.randrange(1, 10 ** 9) if i % 50 else 880142  # one call id in several tenants
        inbound = rnd.random() < 0.7
        start_ms = base_ms + rnd.randrange(0, 19 * 3600 * 1000)
        waiting = rnd.randrange(0, 90)
        abandoned = 1 if inbound and rnd.random() < 0.1 else 0
        voicemail = 1 if inbound and not abandoned and rnd.random() < 0.05 else 0
        talk = 0 if abandoned or voicemail or rnd.random() < 0.1 else rnd.randrange(20, 900)
        agents = rnd.sample(AGENTS, rnd.randrange(0, 3)) if talk else []
        ms = start_ms + (waiting + talk + 5) * 1000
        events = [("call-ended", {})]
        if talk and rnd.random() < 0.6:
            events.append(("call-disposition-saved", {"disposition_code": rnd.choice(DISPOSITIONS)}))
        if talk and rnd.random() < 0.2:
            events.append(("call-disposition-modified", {"disposition_code": rnd.choice(DISPOSITIONS), "disposition_note": "changed"}))
        if talk and rnd.random() < 0.5:
            events.append(("call-recording-received", {"recording_urls": [f"https://rec/{call_id}/{rnd.randrange(9)}.mp3"]}))
        for k, (event, extra) in enumerate(events):
            ems = ms + k * 7000 + rnd.randrange(0, 999)
            event_id = raw(tenant, event, "call", call_id, ems)
            row = dict(
                event_id=event_id, tenant=tenant, event=event, call_id=call_id, received_at=ts(ems),
                received_at_ms=ems, direction="inbound" if inbound else "outbound",
                started_at=ts(start_ms), ended_at=ts(ms), utc_offset_s=offset,
                duration_s=waiting + talk, talk_time_s=talk, waiting_time_s=waiting,
                abandoned=abandoned, voicemail=voicemail, call_type="call", sub_type="",
                tags=["vip"] if rnd.random() < 0.1 else [], recording_urls=[], line_id=7,
                line_number="+1 (555) 010-0000", line_alias="Main",
                campaign="" if inbound else rnd.choice(CAMPAIGNS), ring_group_id=1,
                ring_group=rnd.choice(RING_GROUPS) if inbound else "", disposition_id=None,
                disposition_code="", disposition_note="", contact_id=rnd.randrange(1, 400),
                contact_phone="+1 555 0100", transfer_number="", transfer_talk_time_s=None,
                external_numbers=[], agent_ids=[AGENTS.index(a) for a in agents],
                agent_names=agents, agent_actions=["Answered" if j == 0 else "Missed" for j in range(len(agents))],
                agent_types=["agent"] * len(agents), loaded_at=ts(ems + 1200))
            if event != "call-ended":
                for col in ("direction", "campaign", "ring_group", "line_number", "line_alias", "call_type"):
                    row[col] = ""
                for col in ("started_at", "ended_at", "duration_s", "talk_time_s", "waiting_time_s", "abandoned", "voicemail", "utc_offset_s", "line_id", "ring_group_id", "contact_id"):
                    row[col] = None
                row.update(agent_ids=[], agent_names=[], agent_actions=[], agent_types=[], tags=[])
                row.update(extra)
            t["call_events_store"].append(row)
    for tenant, offset in TENANTS:
        for contact_id in range(1, 120):
            for k, event in enumerate(["contact-created"] + (["contact-modified"] if contact_id % 3 == 0 else [])):
                ems = base_ms + contact_id * 60_000 + k * 3_600_000
                event_id = raw(tenant, event, "contact", contact_id, ems)
                t["contact_events_store"].append(dict(
                    event_id=event_id, tenant=tenant, event=event, contact_id=contact_id,
                    received_at=ts(ems), received_at_ms=ems, first_name=f"F{contact_id}",
                    last_name="" if k else f"L{contact_id}", email=f"c{contact_id}@x.test" if k else "",
                    phone=f"+1 555 {contact_id:04d}", created_at=ts(ems) if not k else None,
                    utc_offset_s=offset, additional_fields="{}", integrations="{}", loaded_at=ts(ems + 900)))
        for list_id in range(1, 4):
            ems = base_ms + list_id * 1000
            event_id = raw(tenant, "contact-list-created", "contact_list", list_id, ems)
            t["contact_list_events_store"].append(dict(
                event_id=event_id, tenant=tenant, event="contact-list-created", list_id=list_id,
                received_at=ts(ems), received_at_ms=ems, name=f"List {list_id}", description="",
                size=list_id * 10, member_ids=list(range(list_id)), created_at=ts(ems),
                utc_offset_s=offset, loaded_at=ts(ems + 800)))
        for n in range(calls // 10):
            ems = base_ms + rnd.randrange(0, 19 * 3600 * 1000)
            message_id = f"m-{tenant}-{n}"
            event = rnd.choice(["message-received", "message-sent"])
            event_id = raw(tenant, event, "message", message_id, ems)
            t["message_events_store"].append(dict(
                event_id=event_id, tenant=tenant, event=event, message_id=message_id,
                received_at=ts(ems), received_at_ms=ems,
                direction="inbound" if event == "message-received" else "outbound",
                channel=rnd.choice(["sms", "whatsapp"]), from_number="+1 555 0101", to_number="+1 555 0102",
                text="hello", sent_at=ts(ems), utc_offset_s=offset, status="delivered",
                contact_id=rnd.randrange(1, 120), agent_id=None, agent_name="", loaded_at=ts(ems + 700)))
        for n in range(5):
            raw(tenant, "call-teleported", "", "", base_ms + 10_000 * n + 7, status="unrecognized")
    for n in range(20):
        ms = base_ms + n * 90_000
        letter = dict(stage="transform", reason=f"bad body {n % 3}", event_id=eid("dl", n), tenant="acme",
                      event="call-ended", source_topic="webhooks.raw", source_partition=n % 3,
                      source_offset=1000 + n, key=f"acme:call:{n}", payload="{}", failed_at=ts(ms),
                      failed_at_ms=ms, loaded_at=ts(ms + 500))
        t["dead_letters_store"].append(letter)
        if n % 7 == 0:  # redone by a restarted stage: same record, later failure time
            t["dead_letters_store"].append(dict(letter, failed_at=ts(ms + 60_000), failed_at_ms=ms + 60_000))
    # Sender retries: 3% of events again under the same event id, received later.
    for name in ("call_events_store", "contact_events_store", "message_events_store", "raw_events_store"):
        extra = []
        for row in t[name]:
            if rnd.random() < 0.03:
                late = row["received_at_ms"] + rnd.randrange(1000, 600_000)
                extra.append(dict(row, received_at_ms=late, received_at=ts(late), loaded_at=ts(late + 1000)))
        t[name].extend(extra)
        rnd.shuffle(t[name])
    return t


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


def load(tables, single, clusters, block=700):
    """The same blocks into every database: Distributed inserts (synchronous) through
    alternating servers; every 5th block is sent twice, the second time through the other
    server, as a loader redoing a block after a crash would."""
    for name, data in tables.items():
        for b, start in enumerate(range(0, len(data), block)):
            body = json_rows(data[start:start + block])
            cols = ", ".join(data[0].keys())
            q(f"INSERT INTO {single}.{name} ({cols}) FORMAT JSONEachRow", 1, body)
            for db in clusters:
                server = 1 + b % 2
                q(f"INSERT INTO {db}.{name} ({cols}) FORMAT JSONEachRow", server, body, insert_distributed_sync=1)
                if b % 5 == 0:
                    q(f"INSERT INTO {db}.{name} ({cols}) FORMAT JSONEachRow", 3 - server, body, insert_distributed_sync=1)


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


def expand(sql, values, db):
    sql = re.sub(r"\$__timeFilter\((\w+)\)", lambda m: f"{m[1]} >= toDateTime({FROM}) AND {m[1]} <= toDateTime({TO})", sql)
    sql = re.sub(r"\$\{(\w+):singlequote\}", lambda m: values[m[1]], sql)
    sql = re.sub(r"\$(\w+)", lambda m: str(values[m[1]]), sql)
    return sql.replace("switchboard.", f"{db}.")


def queries():
    """(name, sql with `switchboard.`, needs dashboard variables of) for everything readers run."""
    out = []
    for path in ANALYTICS:
        out.append((f"sql/analytics/{path.name}", path.read_text(), None))
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for var in dash["templating"]["list"]:
            if var["type"] == "query":
                out.append((f"{path.stem} variable {var['name']}", var["query"], None))
        for panel in dash["panels"]:
            if panel["datasource"]["type"] != "grafana-clickhouse-datasource":
                continue
            for target in panel["targets"]:
                out.append((f"{path.stem}: {panel['title']}", target["rawSql"], dash))
    return out


def variables(dash, db, settings):
    values = {}
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            got = rows(var["query"].replace("switchboard.", f"{db}."), **settings)
            values[var["name"]] = ",".join("'" + r[0].replace("'", "\\'") + "'" for r in got) or "''"
        else:
            values[var["name"]] = var["current"]["value"]
    return values


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000)
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
    tables = generate(a.calls, a.seed)
    load(tables, single, [over_dist, per_shard])
    print(f"  loaded {sum(len(v) for v in tables.values())} rows per database in {time.time() - t0:.1f} s")
    for db in (over_dist, per_shard):
        for name in tables:
            if LAYOUT == "replicated":
                for server in (1, 2):
                    q(f"SYSTEM SYNC REPLICA {db}.{name}_local", server)

    # Storage: each shard collapses its own duplicates, so FINAL over Distributed counts
    # each key once.
    for name in tables:
        want = rows(f"SELECT count() FROM {single}.{name} FINAL")
        check(f"{name}: FINAL row count equal", rows(f"SELECT count() FROM {over_dist}.{name} FINAL") == want)

    # Placement: an entity's rows on one shard only (sharded), on both replicas (replicated).
    for name, key in SHARD_KEYS.items():
        if name not in tables:
            continue
        entity = re.sub(r"^cityHash64\((.*)\)$", r"\1", key)
        per_server = [set(rows(f"SELECT DISTINCT {entity} FROM {over_dist}.{name}_local", s)) for s in (1, 2)]
        total = set(rows(f"SELECT DISTINCT {entity} FROM {single}.{name}"))
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
            text = expand(sql, variables(dash, db, settings), db) if dash else sql.replace("switchboard.", f"{db}.")
            start = time.time()
            try:
                results[db] = rows(text, **settings)
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
