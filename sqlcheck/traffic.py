"""Simulated traffic for the SQL checks: the rows `simulate rows` writes (what the
0001-0003 storage tables receive, with the sender's duplicates and late retries), plus
what the simulator does not produce: deliveries swapped in order, a sparse event that
comes before its call's first full event, replays that change a value, and a block
redone. Cut into blocks in receipt order; `load_old` writes them as the loader did
before 0007, `load_new` through the loader model (loader_model.py) into the 0007 tables.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import tempfile
from pathlib import Path

from loader_model import Loader, day

ROOT = Path(__file__).parent.parent
OLD_TABLES = [
    "raw_events_store", "call_events_store", "contact_events_store",
    "contact_list_events_store", "message_events_store", "dead_letters_store",
]
# Tables that only the current schema has (no old equivalent): loaded by `load_new` only.
NEW_TABLES = ["unmapped_fields_store"]


def simulate_bin() -> str:
    path = os.environ.get("SIMULATE_BIN") or str(ROOT / "target" / "debug" / "simulate")
    assert Path(path).exists(), f"{path} not found: build it with `cargo build -p simulate` (scripts/test.sh does)"
    return path


def simulate(tenant: str, hours: int, seed: int = 42) -> dict[str, list[dict]]:
    """Runs `simulate rows` and reads its JSON lines, one list of rows per storage table,
    as the 0001-0003 tables take them: the loader's own columns (`key_day`,
    `loaded_at_ms`, which it fills when it writes) are left to the models here."""
    with tempfile.TemporaryDirectory(prefix="sb-sim-") as out:
        subprocess.run([simulate_bin(), "--seed", str(seed), "rows", "--out", out, "--hours", str(hours),
                        "--tenant", tenant], check=True, capture_output=True)
        tables = {}
        for name in OLD_TABLES + NEW_TABLES:
            path = Path(out) / (f"{name}.jsonl" if name in NEW_TABLES else f"{name}_v2.jsonl")
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
            for row in rows:
                row.pop("key_day", None)
                row.pop("loaded_at_ms", None)
                if name == "dead_letters_store":
                    row.pop("http_status", None)
                    row.pop("source_addr", None)
            tables[name] = rows
    return tables


def when(table: str, row: dict) -> int:
    return row["failed_at_ms"] if table == "dead_letters_store" else row["received_at_ms"]


def derive(tables: dict[str, list[dict]], seed: int = 1, blocks: int = 6) -> list[dict[str, list[dict]]]:
    """The traffic as blocks (dicts of table -> rows) in insert order, with extra cases."""
    rng = random.Random(seed)
    tables = {name: [dict(r) for r in rows] for name, rows in tables.items()}
    calls = tables["call_events_store"]
    by_call: dict[tuple, list[dict]] = {}
    for row in sorted(calls, key=lambda r: r["received_at_ms"]):
        by_call.setdefault((row["tenant"], row["call_id"]), []).append(row)

    # 1. Swapped order: a call's first two deliveries (different events) trade receipt
    #    times, as when the first got a 5xx and its retry came in after the second.
    moves: dict[tuple[str, str, int], tuple[int, int]] = {}
    for key, events in by_call.items():
        distinct = []
        for row in events:
            if all(row["event_id"] != d["event_id"] for d in distinct):
                distinct.append(row)
        if len(distinct) >= 2 and rng.random() < 0.03:
            a, b = distinct[0], distinct[1]
            moves[(a["tenant"], a["event_id"], a["received_at_ms"])] = (b["received_at_ms"], b["loaded_at"])
            moves[(b["tenant"], b["event_id"], b["received_at_ms"])] = (a["received_at_ms"], a["loaded_at"])
    for name, rows in tables.items():
        if name == "dead_letters_store":
            continue
        for row in rows:
            move = moves.get((row["tenant"], row["event_id"], row["received_at_ms"]))
            if move:
                row["received_at_ms"], row["loaded_at"] = move
                row["received_at"] = move[0] // 1000

    # 2. A sparse call-disposition-saved (no start time) received just before the call's
    #    first full event: every call whose first event comes the day after it started,
    #    and 1% of the others. The call's key_day is then its receipt day.
    for (tenant, call_id), events in by_call.items():
        first = min(events, key=lambda r: r["received_at_ms"])
        crosses = first.get("started_at") is not None and day(first["started_at"]) != day(first["received_at"])
        if not (crosses or rng.random() < 0.01):
            continue
        at_ms = first["received_at_ms"] - 500
        event_id = f"sparse{call_id}"
        common = {"event_id": event_id, "tenant": tenant, "event": "call-disposition-saved",
                  "received_at": at_ms // 1000, "received_at_ms": at_ms, "loaded_at": at_ms // 1000 + 1}
        calls.append({**common, "call_id": call_id, "disposition_code": "EARLY", "disposition_note": "sparse"})
        tables["raw_events_store"].append({**common, "status": "normalized", "entity": "call", "entity_id": str(call_id),
                                           "source_addr": "203.0.113.7", "payload": json.dumps({"id": call_id}), "error": ""})

    # Blocks in receipt order; every row of one delivery in the same block.
    everything = sorted(((when(name, row), name, row) for name, rows in tables.items() for row in rows),
                        key=lambda t: t[0])
    cuts = [everything[len(everything) * i // blocks][0] for i in range(1, blocks)] if everything else []
    out: list[dict[str, list[dict]]] = [{name: [] for name in tables} for _ in range(blocks)]
    for at, name, row in everything:
        i = sum(at >= c for c in cuts)
        out[i][name].append(row)

    # 3. Replays: 2% of call deliveries normalized again, a day later, with a new value.
    replay = {name: [] for name in OLD_TABLES}
    for row in calls:
        if rng.random() < 0.02:
            replay["call_events_store"].append({**row, "disposition_note": "replayed", "loaded_at": row["loaded_at"] + 86400})
            for raw in tables["raw_events_store"]:
                if raw["event_id"] == row["event_id"] and raw["received_at_ms"] == row["received_at_ms"]:
                    replay["raw_events_store"].append({**raw, "loaded_at": raw["loaded_at"] + 86400})
    # 4. A redone block: the second block again, identical rows, right after it (a loader
    #    that crashed before committing its offsets).
    out.insert(2, {name: [dict(r) for r in rows] for name, rows in out[1].items()})
    out.append(replay)
    return out


def insert_json(engine, db: str, table: str, rows: list[dict]) -> None:
    if not rows:
        return
    for i in range(0, len(rows), 20000):
        data = "\n".join(json.dumps(r) for r in rows[i:i + 20000])
        engine.query(f"INSERT INTO {db}.{table} FORMAT JSONEachRow\n{data}")


def load_old(engine, db: str, blocks) -> None:
    """What the loader wrote before 0007: every row of every block."""
    for block in blocks:
        for name, rows in block.items():
            if name in OLD_TABLES:
                insert_json(engine, db, name, rows)


def load_new(engine, db: str, blocks) -> Loader:
    """What the loader writes from 0007 on (loader_model.py)."""
    loader = Loader()
    for block in blocks:
        for name, rows in loader.batch(block).items():
            insert_json(engine, db, name, rows)
    return loader
