"""Old versus new, on both engines: the same traffic (two tenants, two days of
`simulate rows` with the sender's duplicates and late retries, plus swapped deliveries,
sparse first events, replays and a redone block: traffic.py) is written the way the
loader wrote it before 0007 into a database with migrations 0001-0003, and the way it
writes it now (loader_model.py) into one with every migration. Every reader view, every
dashboard panel (all tenants, and one tenant selected), every variable and every
analytics query must give the same answer on both; the old queries are frozen in
baseline_queries.json, the new ones are the files of the repository.
"""

import json
import time
import uuid
from pathlib import Path

import pytest

from grafana import ANALYTICS, DASHBOARDS, clickhouse_panels, expand, load, resolve
from test_sql_on_both_engines import MIGRATIONS, Chdb, Server, statements
from traffic import derive, load_new, load_old, simulate

BASELINE = json.loads((Path(__file__).parent / "baseline_queries.json").read_text())
NOW = int(time.time())
FROM, TO = NOW - 86_400, NOW
TENANTS = (("demo", 42), ("acme", 7))
VIEWS = ["raw_events", "call_events", "calls", "call_agents", "contacts", "contact_lists", "messages", "dead_letters"]


@pytest.fixture(scope="module")
def blocks():
    out = []
    for tenant, seed in TENANTS:
        tables = simulate(tenant, 48, seed)
        out.extend(derive(tables, seed=seed))
    return out


class Pair:
    """An engine with the old schema in one database and the new one in another."""

    def __init__(self, engine, blocks):
        self.engine = engine
        tag = uuid.uuid4().hex[:8]
        self.old, self.new = f"eq_old_{tag}", f"eq_new_{tag}"
        for db, last in ((self.old, 3), (self.new, 99)):
            engine.query(f"DROP DATABASE IF EXISTS {db}")
            engine.query(f"CREATE DATABASE {db}")
            for path in MIGRATIONS:
                if int(path.name[:4]) <= last:
                    for sql in statements(path, db):
                        engine.query(sql)
        load_old(engine, self.old, blocks)
        self.loader = load_new(engine, self.new, blocks)

    def run(self, sql):
        if isinstance(self.engine, Server):
            out = self.engine.query(sql + "\nFORMAT JSONEachRow", output_format_json_quote_64bit_integers=0)
        else:
            out = str(self.engine.session.query(sql, "JSONEachRow"))
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def drop(self):
        for db in (self.old, self.new):
            self.engine.query(f"DROP DATABASE IF EXISTS {db}")


@pytest.fixture(scope="module", params=["chdb", "server"])
def pair(request, blocks):
    p = Pair(Chdb() if request.param == "chdb" else Server(), blocks)
    yield p
    p.drop()


def canonical(rows):
    """Rows as a sorted list of value tuples, floats to 9 significant digits."""
    def value(v):
        if isinstance(v, float):
            return float(f"{v:.9g}")
        if isinstance(v, list):
            return tuple(value(x) for x in v)
        return v
    return sorted((tuple(value(v) for v in row.values()) for row in rows), key=repr)


def test_the_traffic_has_every_case(pair, blocks):
    # Sender duplicates and late retries (one event, several receipts), replays (one
    # receipt, several loads), sparse first events (below), a redone block.
    receipts, loads = {}, {}
    for block in blocks:
        for row in block["call_events_store"]:
            receipts.setdefault((row["tenant"], row["event_id"]), set()).add(row["received_at_ms"])
            loads.setdefault((row["tenant"], row["event_id"]), set()).add(row["loaded_at"])
    assert sum(len(r) > 1 for r in receipts.values()) > 50
    assert sum(len(r) > 1 for r in loads.values()) > 50
    sparse = pair.run(f"SELECT count() AS n FROM {pair.new}.calls WHERE key_day != toDate(started_at)")
    assert sparse[0]["n"] > 0, "no call whose key_day differs from its start day"
    assert pair.run(f"SELECT count() AS n FROM {pair.new}.calls WHERE disposition_note = 'replayed'")[0]["n"] > 0


@pytest.mark.parametrize("view", VIEWS)
def test_views_match(pair, view):
    columns = [r["name"] for r in pair.run(f"DESCRIBE TABLE {pair.old}.{view}")]
    select = ", ".join(columns)
    old = pair.run(f"SELECT {select} FROM {pair.old}.{view}")
    new = pair.run(f"SELECT {select} FROM {pair.new}.{view}")
    assert old, view
    assert len(old) == len(new), view
    assert canonical(old) == canonical(new), view


def baseline_dashboard(path):
    """The dashboard as it was before 0007: its variables ran the frozen queries and
    "All" meant every listed value."""
    dashboard = load(path)
    frozen = BASELINE["dashboards"][path.stem]
    for var in dashboard.get("templating", {}).get("list", []):
        if var["name"] in frozen["variables"]:
            var["query"] = frozen["variables"][var["name"]]
            var.pop("allValue", None)
    return dashboard, frozen["panels"]


def cases():
    for path in DASHBOARDS:
        frozen = BASELINE["dashboards"].get(path.stem, {}).get("panels", {})
        for title, _ in clickhouse_panels(load(path)):
            if title not in frozen:
                continue  # a panel added after 0007 has no old answer to match
            for selected in (None, {"tenant": ["acme"]}):
                yield pytest.param(path, title, selected, id=f"{path.stem}:{title}:{'acme' if selected else 'all'}")


@pytest.mark.parametrize("path,title,selected", list(cases()))
def test_panels_match(pair, path, title, selected):
    old_dashboard, old_panels = baseline_dashboard(path)
    new_dashboard = load(path)
    new_sql = dict(clickhouse_panels(new_dashboard))[title]
    old_values = resolve(pair.run, old_dashboard, FROM, TO, pair.old, selected, use_all_value=False)
    new_values = resolve(pair.run, new_dashboard, FROM, TO, pair.new, selected)
    old = pair.run(expand(old_panels[title], old_values, FROM, TO, pair.old))
    new = pair.run(expand(new_sql, new_values, FROM, TO, pair.new))
    assert old, title
    assert canonical(old) == canonical(new), title


@pytest.mark.parametrize("selected", [None, {"tenant": ["acme"]}], ids=["all", "acme"])
def test_variables_list_the_tenant_and_window_values(pair, selected):
    for path in DASHBOARDS:
        dashboard = load(path)
        old_dashboard, _ = baseline_dashboard(path)
        old_values = resolve(pair.run, old_dashboard, FROM, TO, pair.old, selected, use_all_value=False)
        new_values = resolve(pair.run, dashboard, FROM, TO, pair.new, selected)
        for var in dashboard["templating"]["list"]:
            if var["type"] != "query":
                continue
            reference = BASELINE["variables_reference"][var["name"]]
            old = pair.run(expand(reference, old_values, FROM, TO, pair.old))
            new = pair.run(expand(var["query"], new_values, FROM, TO, pair.new))
            assert old, var["name"]
            assert [list(r.values()) for r in old] == [list(r.values()) for r in new], f"{path.stem}: {var['name']}"


@pytest.mark.parametrize("path", [p for p in ANALYTICS if p.name in BASELINE["analytics"]], ids=lambda p: p.stem)
def test_analytics_match(pair, path):
    # `quantile` samples at most 8,192 values at random, so two runs over more rows may
    # differ (a median on the boundary between two values flips): both sides are asked
    # for the exact quantile, which is what this compares: the rows each storage gives.
    def exact(sql):
        return sql.replace("quantile(", "quantileExact(")

    old = pair.run(exact(BASELINE["analytics"][path.name]).replace("switchboard.", f"{pair.old}."))
    new = pair.run(exact(path.read_text()).replace("switchboard.", f"{pair.new}."))
    assert old, path.name
    assert canonical(old) == canonical(new), path.name


def test_entity_keys_as_the_loader_reads_them(pair):
    # The loader's own table: what it would write for this traffic, read back its way.
    from traffic import insert_json
    keys = [{**k, "first_event_id": "", "first_received_at_ms": 0, "assigned_at_ms": 0} for k in pair.loader.entity_keys()]
    insert_json(pair.engine, pair.new, "entity_keys", keys)
    insert_json(pair.engine, pair.new, "entity_keys", keys[:100])  # a redone insert
    got = pair.run(
        f"SELECT entity, count() AS n, countIf(key_day != toDate('1970-01-01')) AS with_day FROM "
        f"(SELECT tenant, entity, entity_id, argMin(key_day, (first_received_at_ms, key_day)) AS key_day "
        f"FROM {pair.new}.entity_keys GROUP BY tenant, entity, entity_id) GROUP BY entity ORDER BY entity")
    calls = pair.run(f"SELECT count() AS n FROM {pair.new}.calls")[0]["n"]
    assert {r["entity"]: r["n"] for r in got}["call"] == calls
