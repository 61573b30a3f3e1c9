"""Grafana's side of the dashboards, as the checks and the benchmark need it: the panels'
ClickHouse queries, the variables resolved the way Grafana resolves them, and the macros
of the ClickHouse plugin (grafana-clickhouse-datasource, pkg/macros) expanded.

Variables: a query variable's values come from its query, run with the variables before
it already resolved (ring groups and agents depend on the tenant). A multi-value
variable set to "All" expands to its custom all value (`allValue`) verbatim when it has
one, as Grafana does (no quoting is applied to a custom all value), else to all its
values, quoted. A selection can be forced (the benchmark selects one tenant).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
ANALYTICS = sorted((ROOT / "sql" / "analytics").glob("*.sql"))
CLICKHOUSE_PLUGIN = "grafana-clickhouse-datasource"


def clickhouse_panels(dashboard: dict):
    """(title, sql) of every ClickHouse query of a dashboard."""
    for panel in dashboard["panels"]:
        if panel["datasource"]["type"] != CLICKHOUSE_PLUGIN:
            continue
        for target in panel["targets"]:
            yield panel["title"], target["rawSql"]


def quote(value) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def expand(sql: str, values: dict, frm: int, to: int, db: str = "switchboard") -> str:
    """The ClickHouse plugin's macros and Grafana's variables, expanded."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", lambda m: f"{m[1]} >= toDateTime({frm}) AND {m[1]} <= toDateTime({to})", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({frm})").replace("$__toTime", f"toDateTime({to})")
    sql = re.sub(r"\$\{(\w+):singlequote\}", lambda m: values[m[1]], sql)
    sql = re.sub(r"\$(\w+)", lambda m: str(values[m[1]]), sql)
    assert "$" not in sql, sql
    return sql.replace("switchboard.", f"{db}.")


def resolve_one(run, var: dict, values: dict, frm: int, to: int, db: str = "switchboard", selected: dict | None = None,
                use_all_value: bool = True) -> str:
    """The expansion of one variable, given those before it (see `resolve`)."""
    name = var["name"]
    if var["type"] != "query":
        return var["current"]["value"]
    if selected and name in selected:
        return ",".join(quote(v) for v in selected[name]) or "''"
    if use_all_value and var.get("allValue") and var["current"]["value"] in (["$__all"], "$__all"):
        return var["allValue"]
    found = run(expand(var["query"], values, frm, to, db))
    return ",".join(quote(next(iter(r.values()))) for r in found) or "''"


def resolve(run, dashboard: dict, frm: int, to: int, db: str = "switchboard", selected: dict | None = None,
            use_all_value: bool = True) -> dict:
    """Expansions of the dashboard's variables. `run(sql)` returns rows as dicts.
    `selected`: forced selections, {name: [values]}. `use_all_value=False` expands "All"
    to the listed values even where a custom all value exists (how dashboards without one
    behaved)."""
    values: dict = {}
    for var in dashboard["templating"]["list"]:
        values[var["name"]] = resolve_one(run, var, values, frm, to, db, selected, use_all_value)
    return values


def load(path: Path) -> dict:
    return json.loads(path.read_text())
