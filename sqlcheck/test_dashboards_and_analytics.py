"""Every Grafana panel and variable query (macros expanded as Grafana would) and every
documented analytics query (sql/analytics), run on a current ClickHouse engine (chdb)
over two days of simulated traffic that went through the project's own normalization
(`simulate rows`), with checks that the numbers make sense. The same queries also run on
the development server (ClickHouse 18.16) over empty tables, so syntax it lacks fails.
"""

import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from test_sql_on_both_engines import Chdb, Server, migrate

ROOT = Path(__file__).parent.parent
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
ANALYTICS = sorted((ROOT / "sql" / "analytics").glob("*.sql"))
NOW = int(time.time())
FROM, TO = NOW - 86_400, NOW


def simulate_bin() -> str:
    path = os.environ.get("SIMULATE_BIN") or str(ROOT / "target" / "debug" / "simulate")
    assert Path(path).exists(), f"{path} not found: build it with `cargo build -p simulate` (scripts/test.sh does)"
    return path


@pytest.fixture(scope="module")
def chdb():
    """A chdb session whose `switchboard` database holds two days of simulated traffic."""
    out = tempfile.mkdtemp(prefix="sb-sim-")
    subprocess.run([simulate_bin(), "rows", "--out", out, "--hours", "48", "--tenant", "demo"], check=True)
    engine = Chdb()
    engine.query("DROP DATABASE IF EXISTS switchboard")
    engine.query("CREATE DATABASE switchboard")
    migrate(engine, "switchboard")
    for file in sorted(Path(out).glob("*.jsonl")):
        data = file.read_text()
        if data:
            engine.query(f"INSERT INTO switchboard.{file.stem} FORMAT JSONEachRow\n{data}")
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


CLICKHOUSE_PLUGIN = "grafana-clickhouse-datasource"


def panels():
    """Every ClickHouse query of every dashboard (Prometheus panels are checked by
    tests/tests/metrics.rs against the metrics the services export)."""
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            if panel["datasource"]["type"] != CLICKHOUSE_PLUGIN:
                continue
            for target in panel["targets"]:
                yield pytest.param(dashboard, panel, target["rawSql"], id=f"{path.stem}:{panel['title']}")


def test_every_panel_uses_a_provisioned_data_source():
    provisioned = set()
    for path in (ROOT / "deploy" / "grafana" / "provisioning" / "datasources").glob("*.yaml"):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            provisioned.add((source["type"], source["uid"]))
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            source = panel["datasource"]
            assert (source["type"], source["uid"]) in provisioned, f"{path.name}: {panel['title']}"


def variables(engine, dashboard, db="switchboard"):
    """Values of the dashboard's variables, as Grafana would resolve them (all selected)."""
    values = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            rows = query_json(engine, var["query"].replace("switchboard.", f"{db}."))
            values[var["name"]] = ",".join("'" + str(next(iter(r.values()))).replace("'", "\\'") + "'" for r in rows) or "''"
        else:
            values[var["name"]] = var["current"]["value"]
    return values


def expand(sql, values, db="switchboard"):
    """Grafana's ClickHouse macros and variables, expanded."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", lambda m: f"{m[1]} >= toDateTime({FROM}) AND {m[1]} <= toDateTime({TO})", sql)
    sql = re.sub(r"\$\{(\w+):singlequote\}", lambda m: values[m[1]], sql)
    sql = re.sub(r"\$(\w+)", lambda m: str(values[m[1]]), sql)
    assert "$" not in sql, sql
    return sql.replace("switchboard.", f"{db}.")


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


@pytest.mark.parametrize("dashboard,panel,sql", list(panels()))
def test_panel_returns_sensible_rows(chdb, dashboard, panel, sql):
    rows = query_json(chdb, expand(sql, variables(chdb, dashboard)))
    check_values(rows, panel["title"])


@pytest.mark.parametrize("dashboard,panel,sql", list(panels()))
def test_panel_runs_on_the_development_server(server, dashboard, panel, sql):
    engine, db = server
    query_json(engine, expand(sql, variables(engine, dashboard, db), db))


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
