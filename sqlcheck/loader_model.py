"""What the loader writes to the 0007 tables, modelled in Python from the rows the
0001-0003 storage tables receive (the `simulate rows` output: one list of row dicts per
`*_store` table). The loader's guarantees (README, "Loader contract"):

1. Sender duplicates are dropped: an event (tenant, event_id) already stored with a
   different `received_at_ms` is not inserted again, in any table; so every stored row
   of an event carries its first receipt. Rows with the same receipt (a redone block, a
   replay) are inserted again.
2. `loaded_at_ms`: one value per block, the same when the block is redone, later for a
   replay. Here: the row's `loaded_at` (seconds) * 1000, unless the row says otherwise.
3. `key_day`: assigned at an entity's first sight and reused for all its rows: a call's
   `started_at` day if its first event has one, else that event's receipt day; a
   message's `sent_at` day, else its receipt day; contacts and contact lists: the
   receipt day of first sight. Dead letters are not deduplicated (keyed by source record).
"""

from __future__ import annotations

import datetime as dt

OLD_TO_NEW = {
    "raw_events_store": "raw_events_store_v2",
    "call_events_store": "call_events_store_v2",
    "contact_events_store": "contact_events_store_v2",
    "contact_list_events_store": "contact_list_events_store_v2",
    "message_events_store": "message_events_store_v2",
    "dead_letters_store": "dead_letters_store_v2",
    # 0008: no old table; the same name.
    "unmapped_fields_store": "unmapped_fields_store",
}
TYPED = {
    "call_events_store": ("call", "call_id"),
    "contact_events_store": ("contact", "contact_id"),
    "contact_list_events_store": ("contact_list", "list_id"),
    "message_events_store": ("message", "message_id"),
}


def day(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d")


def first_sight_day(kind: str, row: dict) -> str:
    if kind == "call" and row.get("started_at") is not None:
        return day(row["started_at"])
    if kind == "message" and row.get("sent_at") is not None:
        return day(row["sent_at"])
    return day(row["received_at"])


class Loader:
    """Feeds batches the way the loader would; keeps its state between batches (the
    stored first receipts and the entity keys), like the loader's lookups and caches."""

    def __init__(self):
        self.first_receipt: dict[tuple[str, str], int] = {}
        self.keys: dict[tuple[str, str, str], str] = {}

    def batch(self, tables: dict[str, list[dict]]) -> dict[str, list[dict]]:
        """One block: rows of the old storage tables in, rows of the new ones out."""
        out: dict[str, list[dict]] = {new: [] for new in OLD_TO_NEW.values()}
        # Within a block the first delivery of an event wins (receipt order).
        for row in sorted(tables.get("raw_events_store", []), key=lambda r: r["received_at_ms"]):
            self.first_receipt.setdefault((row["tenant"], row["event_id"]), row["received_at_ms"])

        def kept(row):
            first = self.first_receipt.get((row["tenant"], row["event_id"]))
            return first is None or first == row["received_at_ms"]

        typed = []
        for table, (kind, id_column) in TYPED.items():
            for row in tables.get(table, []):
                typed.append((row["received_at_ms"], table, kind, id_column, row))
        typed.sort(key=lambda t: t[0])
        for _, table, kind, id_column, row in typed:
            if not kept(row):
                continue
            key = (row["tenant"], kind, str(row[id_column]))
            if key not in self.keys:
                self.keys[key] = first_sight_day(kind, row)
            out[OLD_TO_NEW[table]].append(new_row(row, key_day=self.keys[key]))
        for row in tables.get("raw_events_store", []):
            if kept(row):
                out["raw_events_store_v2"].append(new_row(row))
        for row in tables.get("unmapped_fields_store", []):
            if kept(row):
                out["unmapped_fields_store"].append(new_row(row))
        for row in tables.get("dead_letters_store", []):
            out["dead_letters_store_v2"].append(new_row(row))
        return out

    def entity_keys(self) -> list[dict]:
        return [
            {"tenant": t, "entity": k, "entity_id": i, "key_day": d}
            for (t, k, i), d in sorted(self.keys.items())
        ]


def new_row(row: dict, **extra) -> dict:
    out = {k: v for k, v in row.items() if k not in ("loaded_at", "loaded_at_ms")}
    out["loaded_at_ms"] = row.get("loaded_at_ms", row.get("loaded_at", 0) * 1000)
    out.update(extra)
    return out
