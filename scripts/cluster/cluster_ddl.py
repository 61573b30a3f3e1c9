#!/usr/bin/env python3
"""Reference implementation of the cluster-mode DDL recipe: turns the single-node
migration statements (warehouse/migrations/*.sql, split exactly as the loader splits them)
into the statements of a replicated, sharded deployment, mechanically. The Rust
implementation (warehouse/src/layout.rs) follows the same rules, and its golden test
compares its output with this script's (warehouse/tests/fixtures/cluster_ddl.sql); this
script is what the checks under scripts/cluster/ run.

    scripts/cluster/cluster_ddl.py --db switchboard --cluster switchboard [--views over-distributed|per-shard]

prints one statement per paragraph (blank-line separated, each ending with ';').

Rules (see scripts/cluster/README.md for why each holds):
  * CREATE DATABASE IF NOT EXISTS d            -> ... ON CLUSTER c
  * CREATE TABLE d.T (...) ENGINE = XMergeTree[(args)] rest
        -> CREATE TABLE IF NOT EXISTS d.T_local ON CLUSTER c (...)
               ENGINE = ReplicatedXMergeTree('/clickhouse/tables/{shard}/d.T', '{replica}'[, args]) rest
               SETTINGS replicated_deduplication_window = W   (merged into an existing SETTINGS)
           CREATE TABLE IF NOT EXISTS d.T ON CLUSTER c (columns without MATERIALIZED/ALIAS ones)
               ENGINE = Distributed(c, d, T_local, <shard key of T>)
  * CREATE VIEW d.V AS body
        over-distributed (default): CREATE VIEW IF NOT EXISTS d.V ON CLUSTER c AS body   (body unchanged)
        per-shard: CREATE VIEW IF NOT EXISTS d.V_local ON CLUSTER c AS body(d.T -> d.T_local)
                   CREATE TABLE IF NOT EXISTS d.V ON CLUSTER c AS d.V_local ENGINE = Distributed(c, d, V_local)
                   (a view reading a table of PLACED_BY_SOURCE stays over-distributed)
  * CREATE MATERIALIZED VIEW d.M TO d.T AS body   (body must read a sharded table)
        -> CREATE MATERIALIZED VIEW IF NOT EXISTS d.M ON CLUSTER c TO d.T_local AS body(d.S -> d.S_local)
  * ALTER TABLE d.T op   -> ALTER TABLE d.T_local ON CLUSTER c op
                            and, when op adds/drops/modifies insertable columns:
                            DROP TABLE IF EXISTS d.T ON CLUSTER c ; CREATE TABLE IF NOT EXISTS d.T ON CLUSTER c
                            (new column list) ENGINE = Distributed(...)   (18.16: Code 371 on ALTER of Distributed ON CLUSTER)
  * DROP TABLE [IF EXISTS] d.X  -> DROP TABLE IF EXISTS d.X ON CLUSTER c
                                   and, when X has a local table: DROP TABLE IF EXISTS d.X_local ON CLUSTER c
  * schema_migrations (the loader's own table, not in a migration file): one replica on
    every server (ZooKeeper path without {shard}), see schema_migrations().
  {shard} and {replica} are server macros: they are left for the server to expand.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
MIGRATIONS = sorted((ROOT / "warehouse" / "migrations").glob("*.sql"))

# The shard key of every table a migration creates. It must be a function of the
# table's ORDER BY columns only (rows that ReplacingMergeTree would merge then always
# share a shard) and, for entity tables, of (tenant, entity id) only (an entity's rows
# then share a shard, so per-entity GROUP BY is exact on each shard). A table missing
# here is refused: a new migration must name its key. The Rust side keeps the same table
# in warehouse/src/table.rs (`Table::shard_key`) and warehouse/src/layout.rs.
SHARD_KEYS = {
    "raw_events_store": "cityHash64(tenant, event_id)",
    "call_events_store": "cityHash64(tenant, call_id)",
    "contact_events_store": "cityHash64(tenant, contact_id)",
    "contact_list_events_store": "cityHash64(tenant, list_id)",
    "message_events_store": "cityHash64(tenant, message_id)",
    "dead_letters_store": "cityHash64(stage, source_topic, source_partition, source_offset)",
    "loader_blocks": "cityHash64(consumer_group, topic, partition)",
    # Migration 0007 (analytics state): per-event tables like their 0001/0002
    # counterparts; aggregate states on the shard of the events that feed them (a
    # materialized view fires on the shard that received the insert).
    "raw_events_store_v2": "cityHash64(tenant, event_id)",
    "call_events_store_v2": "cityHash64(tenant, call_id)",
    "contact_events_store_v2": "cityHash64(tenant, contact_id)",
    "contact_list_events_store_v2": "cityHash64(tenant, list_id)",
    "message_events_store_v2": "cityHash64(tenant, message_id)",
    "dead_letters_store_v2": "cityHash64(stage, source_topic, source_partition, source_offset)",
    "entity_keys": "cityHash64(tenant, entity_id)",
    "calls_state": "cityHash64(tenant, call_id)",
    "contacts_state": "cityHash64(tenant, contact_id)",
    "contact_lists_state": "cityHash64(tenant, list_id)",
    "messages_state": "cityHash64(tenant, message_id)",
    # Fed by a materialized view over raw_events_store_v2, so its rows sit on the shard
    # of the raw event (tenant, event_id), whatever this key says: a (tenant, day) may be
    # on several shards, and readers take DISTINCT (never FINAL) of it.
    "tenant_days": "cityHash64(tenant, day)",
    # Migration 0008 (field discovery): a delivery's paths with its raw event. The state
    # is fed by a view over the store, so, like tenant_days, its rows sit on the shard of
    # the delivery whatever this key says; the reader view merges a path's states.
    "unmapped_fields_store": "cityHash64(tenant, event_id)",
    "unmapped_fields_state": "cityHash64(tenant, event, kind, path)",
    # Migration 0009: the audit of erasures.
    "erasures": "cityHash64(tenant, request_id)",
}

LOCAL_SUFFIX = "_local"
DEDUP_WINDOW = 10000

# Tables a materialized view fills on the shard of the row it came from, not by their own
# key (see SHARD_KEYS): one key's rows may sit on several shards. A per-shard view over
# one would give each shard's part of a key as a row of its own, so a view reading one
# stays over the Distributed tables in both read designs.
PLACED_BY_SOURCE = ("tenant_days", "unmapped_fields_state")
MERGE_TREE = re.compile(r"^(Replacing|Aggregating|Summing|Collapsing|VersionedCollapsing|Graphite)?MergeTree$")


def statements(path: Path, db: str) -> list[str]:
    """The statements of a migration file, split the way the loader splits them."""
    text = "".join(line + "\n" for line in path.read_text().splitlines() if not line.lstrip().startswith("--"))
    return [s.strip().replace("{db}", db) for s in text.split(";") if s.strip()]


def matching_paren(s: str, start: int) -> int:
    """Index of the ')' closing the '(' at `start` (quotes respected)."""
    depth, i, quote = 0, start, None
    while i < len(s):
        c = s[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'`\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced parentheses in: {s[:80]}")


def split_top_level(s: str) -> list[str]:
    parts, depth, cur, quote = [], 0, "", None
    for c in s:
        if quote:
            cur += c
            if c == quote:
                quote = None
            continue
        if c in "'`\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        cur += c
    if cur.strip():
        parts.append(cur.strip())
    return parts


def insertable(column: str) -> bool:
    """Whether a column definition belongs in the Distributed table: MATERIALIZED and
    ALIAS columns are computed by the shard; a Distributed table that lists them refuses
    inserts (Code 44)."""
    return not re.search(r"\s(MATERIALIZED|ALIAS)\s", " " + column + " ", re.I)


class Rewriter:
    def __init__(self, db: str, cluster: str, views: str, dedup_window: int = DEDUP_WINDOW):
        self.db, self.cluster, self.views, self.dedup_window = db, cluster, views, dedup_window
        self.sharded: list[str] = []  # tables that got a _local + Distributed pair
        self.columns: dict[str, list[str]] = {}  # their Distributed tables' columns
        self.shard_views: list[str] = []

    def to_local(self, body: str) -> str:
        """Points every reference to a sharded table (or per-shard view) at its local table."""
        for name in self.sharded + self.shard_views:
            body = re.sub(rf"\b{re.escape(self.db)}\.{name}\b", f"{self.db}.{name}{LOCAL_SUFFIX}", body)
        return body

    def rewrite(self, sql: str) -> list[str]:
        db, c = re.escape(self.db), self.cluster
        m = re.match(rf"CREATE\s+DATABASE\s+(IF\s+NOT\s+EXISTS\s+)?({db})\s*$", sql, re.I)
        if m:
            return [f"CREATE DATABASE IF NOT EXISTS {self.db} ON CLUSTER {c}"]

        m = re.match(rf"CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?{db}\.(\w+)\s*\(", sql, re.I)
        if m:
            return self.create_table(sql, m.group(2), m.end() - 1)

        m = re.match(rf"CREATE\s+MATERIALIZED\s+VIEW\s+(IF\s+NOT\s+EXISTS\s+)?{db}\.(\w+)\s+TO\s+{db}\.(\w+)\s+AS\s+(.*)$", sql, re.I | re.S)
        if m:
            name, target, body = m.group(2), m.group(3), m.group(4)
            if target not in self.sharded:
                raise ValueError(f"materialized view {name}: its TO table {target} is not a sharded table")
            if self.to_local(body) == body:
                # A view over a Distributed table would fire once, on the server that took
                # the insert, and write every shard's rows into that server's target.
                raise ValueError(f"materialized view {name}: reads no sharded table")
            return [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.db}.{name} ON CLUSTER {c} TO {self.db}.{target}{LOCAL_SUFFIX} AS {self.to_local(body)}"]
        if re.match(r"CREATE\s+MATERIALIZED\s+VIEW", sql, re.I):
            raise ValueError("a materialized view needs TO <table> (its inner table would be neither replicated nor sharded)")

        m = re.match(rf"CREATE\s+VIEW\s+(IF\s+NOT\s+EXISTS\s+)?{db}\.(\w+)\s+AS\s+(.*)$", sql, re.I | re.S)
        if m:
            name, body = m.group(2), m.group(3)
            reads_placed_by_source = any(
                re.search(rf"\b{re.escape(self.db)}\.{t}\b", body) for t in PLACED_BY_SOURCE
            )
            if self.views == "over-distributed" or reads_placed_by_source:
                return [f"CREATE VIEW IF NOT EXISTS {self.db}.{name} ON CLUSTER {c} AS {body}"]
            local = f"{name}{LOCAL_SUFFIX}"
            out = [
                f"CREATE VIEW IF NOT EXISTS {self.db}.{local} ON CLUSTER {c} AS {self.to_local(body)}",
                f"CREATE TABLE IF NOT EXISTS {self.db}.{name} ON CLUSTER {c} AS {self.db}.{local} ENGINE = Distributed({c}, {self.db}, {local})",
            ]
            self.shard_views.append(name)
            return out

        m = re.match(rf"ALTER\s+TABLE\s+{db}\.(\w+)\s+(.*)$", sql, re.I | re.S)
        if m:
            name, op = m.group(1), m.group(2)
            if name not in self.sharded:
                raise ValueError(f"ALTER of {name}, which no migration created as a table: {sql[:100]}")
            out = [f"ALTER TABLE {self.db}.{name}{LOCAL_SUFFIX} ON CLUSTER {c} {op}"]
            if self.change_columns(name, op):
                # 18.16 refuses ALTER ... ON CLUSTER of a Distributed table when the shards
                # say internal_replication (Code 371). It holds no data (inserts are
                # synchronous), so it is created again with the new column list.
                out.append(f"DROP TABLE IF EXISTS {self.db}.{name} ON CLUSTER {c}")
                out.append(self.distributed(name))
            return out

        m = re.match(rf"DROP\s+TABLE\s+(IF\s+EXISTS\s+)?{db}\.(\w+)\s*$", sql, re.I)
        if m:
            name = m.group(2)
            out = [f"DROP TABLE IF EXISTS {self.db}.{name} ON CLUSTER {c}"]
            if name in self.sharded or name in self.shard_views:
                # The local table (or per-shard view) goes too, after the Distributed
                # table that reads it; a later CREATE of the name starts afresh.
                out.append(f"DROP TABLE IF EXISTS {self.db}.{name}{LOCAL_SUFFIX} ON CLUSTER {c}")
                for names in (self.sharded, self.shard_views):
                    if name in names:
                        names.remove(name)
                self.columns.pop(name, None)
            return out

        raise ValueError(f"no cluster rule for statement: {sql[:100]}")

    def create_table(self, sql: str, name: str, open_paren: int) -> list[str]:
        close = matching_paren(sql, open_paren)
        columns = split_top_level(sql[open_paren + 1 : close])
        rest = sql[close + 1 :].strip()
        m = re.match(r"ENGINE\s*=\s*(\w+)\s*", rest)
        if not m:
            raise ValueError(f"table {name}: no ENGINE clause")
        engine, args, tail = m.group(1), "", rest[m.end() :]
        if tail.startswith("("):
            end = matching_paren(tail, 0)
            args, tail = tail[1:end].strip(), tail[end + 1 :]
        tail = tail.strip()
        if not MERGE_TREE.match(engine):
            raise ValueError(f"table {name}: engine {engine} has no replicated form")
        if name not in SHARD_KEYS:
            raise ValueError(f"table {name}: no shard key declared (SHARD_KEYS)")
        path = f"'/clickhouse/tables/{{shard}}/{self.db}.{name}'"
        replicated_args = ", ".join([path, "'{replica}'"] + ([args] if args else []))
        setting = f"replicated_deduplication_window = {self.dedup_window}"
        if re.search(r"\bSETTINGS\b", tail, re.I):
            tail = re.sub(r"\bSETTINGS\b", f"SETTINGS {setting},", tail, count=1, flags=re.I)
        else:
            tail = f"{tail}\nSETTINGS {setting}"
        c, local = self.cluster, f"{name}{LOCAL_SUFFIX}"
        cols = ",\n    ".join(columns)
        self.sharded.append(name)
        self.columns[name] = [col for col in columns if insertable(col)]
        return [
            f"CREATE TABLE IF NOT EXISTS {self.db}.{local} ON CLUSTER {c}\n(\n    {cols}\n)\n"
            f"ENGINE = Replicated{engine}({replicated_args})\n{tail}",
            self.distributed(name),
        ]

    def distributed(self, name: str) -> str:
        cols = ",\n    ".join(self.columns[name])
        return (f"CREATE TABLE IF NOT EXISTS {self.db}.{name} ON CLUSTER {self.cluster}\n(\n    {cols}\n)\n"
                f"ENGINE = Distributed({self.cluster}, {self.db}, {name}{LOCAL_SUFFIX}, {SHARD_KEYS[name]})")

    def change_columns(self, name: str, op: str) -> bool:
        """Applies ADD/DROP/MODIFY COLUMN clauses of an ALTER to the Distributed table's
        column list; whether it changed."""
        changed = False
        for clause in split_top_level(op):
            m = re.match(r"(ADD|DROP|MODIFY)\s+COLUMN\s+(\w+)\s*(.*)$", clause, re.I | re.S)
            if not m:
                continue
            verb, col, rest = m.group(1).upper(), m.group(2), m.group(3).strip()
            cols = self.columns[name]
            index = next((i for i, d in enumerate(cols) if d.split()[0] == col), None)
            rest = re.sub(r"\s+(AFTER\s+\w+|FIRST)\s*$", "", rest, flags=re.I)
            if verb == "DROP" and index is not None:
                del cols[index]
            elif verb == "ADD" and index is None and insertable(f"{col} {rest}"):
                cols.append(f"{col} {rest}")
            elif verb == "MODIFY" and index is not None:
                if insertable(f"{col} {rest}"):
                    cols[index] = f"{col} {rest}"
                else:
                    del cols[index]
            else:
                continue
            changed = True
        return changed


def schema_migrations(db: str, cluster: str) -> str:
    """The loader's record of applied migrations: one replica on every server (ZooKeeper
    path without {shard}), so each loader reads it from the server it talks to;
    `applied_at` is sent by the client (no server default), so a re-sent record is
    identical and deduplicated."""
    return (f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations ON CLUSTER {cluster}\n"
            f"(version UInt32, name String, applied_at DateTime('UTC'))\n"
            f"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{db}.schema_migrations', '{{replica}}', applied_at)\n"
            f"ORDER BY version")


def cluster_statements(db: str, cluster: str, views: str = "over-distributed", dedup_window: int = DEDUP_WINDOW) -> list[tuple[str, list[str]]]:
    """(migration file name, cluster statements) for every migration, in order, after the
    database and schema_migrations."""
    rw = Rewriter(db, cluster, views, dedup_window)
    out = [("database", rw.rewrite(f"CREATE DATABASE IF NOT EXISTS {db}")),
           ("schema_migrations", [schema_migrations(db, cluster)])]
    for path in MIGRATIONS:
        stmts = []
        for sql in statements(path, db):
            stmts.extend(rw.rewrite(sql))
        out.append((path.name, stmts))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="switchboard")
    ap.add_argument("--cluster", default="switchboard")
    ap.add_argument("--views", choices=["over-distributed", "per-shard"], default="over-distributed")
    ap.add_argument("--dedup-window", type=int, default=DEDUP_WINDOW)
    a = ap.parse_args()
    args = f"--db {a.db} --cluster {a.cluster}" + (f" --views {a.views}" if a.views != "over-distributed" else "") \
        + (f" --dedup-window {a.dedup_window}" if a.dedup_window != DEDUP_WINDOW else "")
    print(f"-- Generated by scripts/cluster/cluster_ddl.py {args}: do not edit.")
    if args == "--db switchboard --cluster switchboard":
        # The fixture of warehouse/tests/cluster_ddl.rs, the golden test of the Rust rewrite.
        print(f"-- Regenerate: scripts/cluster/cluster_ddl.py {args} > warehouse/tests/fixtures/cluster_ddl.sql")
    for name, stmts in cluster_statements(a.db, a.cluster, a.views, a.dedup_window):
        print(f"-- {name}")
        for s in stmts:
            print(s + ";\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
