"""Every Grafana panel and variable query (macros expanded as Grafana would) and every
documented analytics query (sql/analytics), run on a current ClickHouse engine (chdb)
over two days of simulated traffic that went through the project's own normalization
(`simulate rows`) and the loader model (loader_model.py), with checks that the numbers
make sense. The same queries also run on the development server (ClickHouse 18.16) over
empty tables, so syntax it lacks fails. test_old_vs_new.py compares the answers with
those of the views before 0007, on both engines.
"""

import json
import time
import uuid
from pathlib import Path

import pytest
import yaml

from grafana import ANALYTICS, DASHBOARDS, ROOT, clickhouse_panels, expand, load, resolve
from test_sql_on_both_engines import Chdb, Server, migrate
from traffic import derive, load_new, simulate

NOW = int(time.time())
FROM, TO = NOW - 86_400, NOW


@pytest.fixture(scope="module")
def chdb():
    """A chdb session whose `switchboard` database holds two days of simulated traffic."""
    tables = simulate("demo", 48)
    engine = Chdb()
    engine.query("DROP DATABASE IF EXISTS switchboard")
    engine.query("CREATE DATABASE switchboard")
    migrate(engine, "switchboard")
    load_new(engine, "switchboard", derive(tables))
    return engine


@pytest.fixture(scope="module")
def server():
    """The development server with an empty copy of the schema."""
    engine = Server()
    db = "dash_" + uuid.uuid4().hex[:12]
    engine.query(f"CREATE DATABASE {db}")
    migrate(engine, db)
    yield engine, db
    engine.query(f"DROP DATABASE IF EXISTS {db}")


def query_json(engine, sql):
    out = engine.query(sql + "\nFORMAT JSONEachRow") if isinstance(engine, Server) else str(engine.session.query(sql, "JSONEachRow"))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def panels():
    """Every ClickHouse query of every dashboard (Prometheus panels are checked by
    tests/tests/metrics.rs against the metrics the services export)."""
    for path in DASHBOARDS:
        dashboard = load(path)
        for title, sql in clickhouse_panels(dashboard):
            yield pytest.param(dashboard, title, sql, id=f"{path.stem}:{title}")


def test_every_panel_uses_a_provisioned_data_source():
    provisioned = set()
    for path in (ROOT / "deploy" / "grafana" / "provisioning" / "datasources").glob("*.yaml"):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            provisioned.add((source["type"], source["uid"]))
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            source = panel["datasource"]
            assert (source["type"], source["uid"]) in provisioned, f"{path.name}: {panel['title']}"


def test_variables_never_expand_to_an_empty_list():
    # `x IN ()` is a syntax error on 18.16: a multi-value variable with "All" must have a
    # custom all value, so that "All" over no options still expands to valid SQL.
    for path in DASHBOARDS:
        for var in load(path).get("templating", {}).get("list", []):
            if var["type"] == "query" and var.get("includeAll"):
                assert var.get("allValue"), f"{path.name}: variable {var['name']} has no custom all value"


def test_readers_bound_key_day_beside_the_time_filter():
    # Every query of an entity view bounds key_day, so it prunes (README, "Analytics SQL").
    sources = [(f"{p.stem}:{t}", s) for p in DASHBOARDS for t, s in clickhouse_panels(load(p))]
    sources += [(f"{p.stem}:{v['name']}", v["query"]) for p in DASHBOARDS
                for v in load(p).get("templating", {}).get("list", []) if v["type"] == "query"]
    sources += [(p.name, p.read_text()) for p in ANALYTICS]
    for name, sql in sources:
        for view in ("calls", "call_agents", "contacts", "messages"):
            if f"switchboard.{view} " in sql or f"switchboard.{view}\n" in sql:
                assert "key_day" in sql, f"{name} reads {view} without a key_day bound"


def variables(engine, dashboard, db="switchboard"):
    return resolve(lambda sql: query_json(engine, sql), dashboard, FROM, TO, db)


def check_values(rows, what):
    assert rows, f"{what} returned no rows"
    for row in rows:
        for name, value in row.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if "rate" in name or name == "service_level":
                assert 0 <= value <= 1, f"{what}: {name} = {value}"
            if name.startswith(("avg_", "p50", "p90", "p99", "max_", "calls", "events", "messages", "new_contacts")):
                assert value >= 0, f"{what}: {name} = {value}"
        if "p50_delay_s" in row and "p99_delay_s" in row:
            assert row["p50_delay_s"] <= row["p99_delay_s"], f"{what}: {row}"


@pytest.mark.parametrize("dashboard,title,sql", list(panels()))
def test_panel_returns_sensible_rows(chdb, dashboard, title, sql):
    rows = query_json(chdb, expand(sql, variables(chdb, dashboard), FROM, TO))
    check_values(rows, title)


@pytest.mark.parametrize("dashboard,title,sql", list(panels()))
def test_panel_runs_on_the_development_server(server, dashboard, title, sql):
    engine, db = server
    query_json(engine, expand(sql, variables(engine, dashboard, db), FROM, TO, db))


@pytest.mark.parametrize("path", ANALYTICS, ids=lambda p: p.stem)
def test_analytics_query_returns_sensible_rows(chdb, path):
    check_values(query_json(chdb, path.read_text()), path.name)


@pytest.mark.parametrize("path", ANALYTICS, ids=lambda p: p.stem)
def test_analytics_query_runs_on_the_development_server(server, path):
    engine, db = server
    query_json(engine, path.read_text().replace("switchboard.", f"{db}."))


def test_the_simulated_day_looks_like_a_call_center(chdb):
    [row] = query_json(
        chdb,
        "SELECT count() AS calls, countIf(direction = 'inbound') / count() AS inbound_share, "
        "countIf(ifNull(abandoned, 0) = 1 AND direction = 'inbound') / countIf(direction = 'inbound') AS abandonment_rate "
        "FROM switchboard.calls",
    )
    assert row["calls"] > 500
    assert 0.6 < row["inbound_share"] < 0.8
    assert 0.02 < row["abandonment_rate"] < 0.4
    statuses = {r["status"] for r in query_json(chdb, "SELECT DISTINCT status FROM switchboard.raw_events")}
    assert statuses == {"normalized", "unrecognized", "invalid"}
