"""The 0007 backfill (scripts/backfill-0007, warehouse/backfill/0007_backfill.sql), on both
engines: a database written the way the loader wrote it before 0007 (migrations
0001-0003, simulated traffic with duplicates, late retries, swaps, sparse first events,
replays, a redone block) is upgraded in place: 0007 applied, keys phase, events phase
interrupted half way and run again. Every reader view must then answer as the old views
did, and entity_keys must hold one key per entity.
"""

import importlib.machinery
import importlib.util
import json
import uuid
from pathlib import Path

import pytest

from test_old_vs_new import VIEWS, canonical
from test_sql_on_both_engines import MIGRATIONS, Chdb, Server, statements
from traffic import derive, load_old, simulate

ROOT = Path(__file__).parent.parent


def backfill_module():
    loader = importlib.machinery.SourceFileLoader("backfill_0007", str(ROOT / "scripts" / "backfill-0007"))
    spec = importlib.util.spec_from_loader("backfill_0007", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def blocks():
    return derive(simulate("demo", 30, 3), seed=3)


class Interrupted(Exception):
    pass


class Failing:
    """An engine that fails on the n-th INSERT into a new table, as a crash would."""

    def __init__(self, engine, n):
        self.engine, self.n = engine, n

    def query(self, sql):
        if "_store_v2" in sql and sql.lstrip().startswith("INSERT"):
            self.n -= 1
            if self.n == 0:
                raise Interrupted()
        return self.engine.query(sql)


def run(engine, sql):
    out = engine.query(sql + "\nFORMAT JSONEachRow", **({"output_format_json_quote_64bit_integers": 0} if isinstance(engine, Server) else {}))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("engine_name", ["chdb", "server"])
def test_backfill_reproduces_the_old_views(engine_name, blocks):
    engine = Chdb() if engine_name == "chdb" else Server()
    db = "bf_" + uuid.uuid4().hex[:10]
    engine.query(f"CREATE DATABASE {db}")
    try:
        for path in MIGRATIONS:
            if int(path.name[:4]) <= 3:
                for sql in statements(path, db):
                    engine.query(sql)
        load_old(engine, db, blocks)
        before = {}
        for view in VIEWS:
            columns = [r["name"] for r in run(engine, f"DESCRIBE TABLE {db}.{view}")]
            before[view] = (columns, canonical(run(engine, f"SELECT {', '.join(columns)} FROM {db}.{view}")))

        module = backfill_module()
        # Small chunks, so that every step has several.
        job = module.Backfill(engine, db, per_chunk=200, raw_per_chunk=2000, log=lambda *a: None)
        job.ensure_schema()
        job.keys(recent_days=2)
        job.engine = Failing(engine, 15)
        with pytest.raises(Interrupted):
            job.events()
        job.engine = engine
        job.events()
        job.events()  # a third run finds everything done
        assert len(run(engine, f"SELECT step FROM {db}.backfill_0007")) > 20

        for view in VIEWS:
            columns, rows = before[view]
            after = canonical(run(engine, f"SELECT {', '.join(columns)} FROM {db}.{view}"))
            assert len(after) == len(rows), view
            assert after == rows, view
        keys = run(engine, f"SELECT entity, count() AS n, uniqExact(entity_id) AS ids FROM {db}.entity_keys GROUP BY entity ORDER BY entity")
        calls = run(engine, f"SELECT count() AS n FROM {db}.calls")[0]["n"]
        assert {r["entity"]: r["ids"] for r in keys}["call"] == calls
        # Every call's rows share the key_day entity_keys gives it.
        [mismatch] = run(engine, (
            f"SELECT count() AS n FROM {db}.call_events_store_v2 ANY LEFT JOIN "
            f"(SELECT toInt64(entity_id) AS call_id, argMin(key_day, (first_received_at_ms, key_day)) AS k "
            f"FROM {db}.entity_keys WHERE entity = 'call' GROUP BY call_id) AS ek USING (call_id) WHERE key_day != k"))
        assert mismatch["n"] == 0
    finally:
        engine.query(f"DROP DATABASE IF EXISTS {db}")
