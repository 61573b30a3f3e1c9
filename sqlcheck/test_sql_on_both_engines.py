"""Every migration, and the merge semantics of the views, on both ClickHouse engines the
project supports: the development server (ClickHouse 18.16, over HTTP at CLICKHOUSE_URL)
and a current engine (chdb, in process). SQL that only one of them accepts fails here.
"""

import atexit
import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from loader_model import Loader

MIGRATIONS = sorted((Path(__file__).parent.parent / "warehouse" / "migrations").glob("*.sql"))


def statements(path: Path, db: str) -> list[str]:
    """The statements of a migration file, split the way the loader splits them."""
    text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("--"))
    return [s.strip().replace("{db}", db) for s in text.split(";") if s.strip()]


class Chdb:
    """The current engine. chdb allows one embedded server per process, so every test
    shares one session and keeps to databases of its own."""

    name = "chdb"
    _session = None

    def __init__(self):
        from chdb import session

        if Chdb._session is None:
            path = tempfile.mkdtemp(prefix="sb-chdb-")
            Chdb._session = session.Session(path)
            atexit.register(shutil.rmtree, path, True)
        self.session = Chdb._session

    def query(self, sql: str, **settings) -> str:
        if settings:
            sql += " SETTINGS " + ", ".join(f"{k} = {v!r}" for k, v in settings.items())
        return str(self.session.query(sql, "TSV"))


class Server:
    name = "server"

    def __init__(self):
        self.url = os.environ.get("CLICKHOUSE_URL")
        assert self.url, "CLICKHOUSE_URL is not set: run scripts/test.sh, or scripts/dev-services up and source .dev-services.env"

    # The development server's profile (scripts/clickhouse/users.xml) turns on
    # enable_optimize_predicate_expression, which 18.16 needs to push a reader's
    # tenant/key_day filter into the views; sent here too, so these tests do not depend on
    # which users.xml the running server was started with.
    SETTINGS = {"max_execution_time": 20, "enable_optimize_predicate_expression": 1, "input_format_skip_unknown_fields": 1}

    def query(self, sql: str, **settings) -> str:
        url = self.url + "/?" + urllib.parse.urlencode({**self.SETTINGS, **settings})
        try:
            with urllib.request.urlopen(url, data=sql.encode(), timeout=30) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(e.read().decode()) from None


@pytest.fixture(params=["chdb", "server"])
def engine(request):
    return Chdb() if request.param == "chdb" else Server()


@pytest.fixture
def db(engine):
    name = "sqlcheck_" + uuid.uuid4().hex[:12]
    engine.query(f"CREATE DATABASE {name}")
    yield name
    engine.query(f"DROP DATABASE IF EXISTS {name}")


def adds_a_column(sql: str) -> bool:
    """Like the loader (warehouse/src/migrations.rs): an ADD COLUMN whose column exists
    (code 15; 44 "already exists" on 18.16) was applied before; 18.16 has no ADD COLUMN
    IF NOT EXISTS."""
    return sql.startswith("ALTER TABLE ") and " ADD COLUMN " in sql


def migrate(engine, db):
    """Applies every migration the way the loader does; raises on the first failure."""
    for path in MIGRATIONS:
        for sql in statements(path, db):
            try:
                engine.query(sql)
            except Exception as e:  # noqa: BLE001 - the loader tolerates this one case
                existing = "Code: 15." in str(e) or ("Code: 44," in str(e) and "already exists" in str(e))
                if not (adds_a_column(sql) and existing):
                    raise RuntimeError(f"{path.name} failed on {engine.name}: {e}\n{sql[:300]}") from None


def apply_all(engine, db):
    try:
        migrate(engine, db)
    except RuntimeError as e:
        pytest.fail(str(e))


def rows(engine, sql):
    out = engine.query(sql).strip()
    return [line.split("\t") for line in out.splitlines()] if out else []


def test_migrations_apply_and_apply_again(engine, db):
    assert MIGRATIONS, "no migration files found"
    apply_all(engine, db)
    apply_all(engine, db)
    tables = {r[0] for r in rows(engine, f"SELECT name FROM system.tables WHERE database = '{db}'")}
    assert {"raw_events", "raw_events_store_v2", "call_events", "call_events_store_v2", "calls", "calls_state",
            "call_agents", "contacts", "contact_lists", "messages", "dead_letters", "entity_keys", "tenant_days",
            "unmapped_fields_store", "unmapped_fields_state", "unmapped_fields", "erasures"} <= tables


def insert(engine, db, table, new_rows):
    """One INSERT (one block, one part), as the loader sends it."""
    data = "\n".join(json.dumps(r) for r in new_rows)
    engine.query(f"INSERT INTO {db}.{table} FORMAT JSONEachRow\n{data}")


DAY = "2026-03-02"
T0 = 1772460000  # 2026-03-02 14:00:00 UTC


def call(event_id, at_s, loaded_s=None, call_id=7, event="call-ended", **columns):
    """A call_events_store_v2 row as the loader writes it: receipt at `at_s`, loaded in a
    block stamped `loaded_s` (default: a second later), the call's key_day."""
    row = {
        "event_id": event_id, "tenant": "acme", "event": event, "call_id": call_id, "key_day": DAY,
        "received_at": at_s, "received_at_ms": at_s * 1000, "loaded_at_ms": (loaded_s or at_s + 1) * 1000,
    }
    row.update(columns)
    return row


CALL_QUERY = (
    "SELECT call_id, direction, toString(started_at), abandoned, disposition_code, recording_urls, tags, "
    "agent_names, events, toUnixTimestamp(first_event_at), toUnixTimestamp(last_event_at) FROM {db}.calls ORDER BY call_id"
)


def calls(engine, db):
    return rows(engine, CALL_QUERY.format(db=db))


def test_calls_keep_the_newest_non_empty_value(engine, db):
    apply_all(engine, db)
    insert(engine, db, "call_events_store_v2", [
        call("e1", T0, direction="inbound", started_at=T0 - 300, abandoned=0, tags=["vip"], agent_names=["Dev"]),
        call("e2", T0 + 60, event="call-disposition-saved", disposition_code="SALE", recording_urls=["https://r/1"]),
    ])
    insert(engine, db, "call_events_store_v2", [
        call("e3", T0 + 120, event="call-recording-received", abandoned=1, recording_urls=["https://r/2"], tags=[]),
    ])
    assert calls(engine, db) == [[
        "7", "inbound", "2026-03-02 13:55:00", "1", "SALE", "['https://r/1','https://r/2']", "['vip']", "['Dev']",
        "3", str(T0), str(T0 + 120),
    ]]
    assert rows(engine, f"SELECT count() FROM {db}.call_events") == [["3"]]


def test_a_sender_retry_of_an_older_event_never_overrides_newer_state(engine, db):
    # The sender retries e1 (call-ended) after e2 (the disposition) went through. The
    # loader finds e1 stored with another receipt time and drops the retry (guarantee 1),
    # so nothing of it reaches any table: not its values, not its receipt time.
    apply_all(engine, db)
    loader = Loader()
    base = {"tenant": "acme", "event": "call-ended", "call_id": 7, "direction": "inbound", "started_at": T0 - 300}

    def delivery(event_id, at_s, **columns):
        typed = {**base, "event_id": event_id, "received_at": at_s, "received_at_ms": at_s * 1000, "loaded_at": at_s + 1, **columns}
        raw = {"event_id": event_id, "tenant": "acme", "event": typed["event"], "status": "normalized", "entity": "call",
               "entity_id": "7", "received_at": at_s, "received_at_ms": at_s * 1000, "payload": "{}", "loaded_at": at_s + 1}
        return {"raw_events_store": [raw], "call_events_store": [typed]}

    for batch in (
        delivery("e1", T0, abandoned=0),
        delivery("e2", T0 + 60, event="call-disposition-saved", disposition_code="SALE", abandoned=0),
        delivery("e1", T0 + 120, abandoned=0),  # the retry: same body, so the same event id
    ):
        for table, new_rows in loader.batch(batch).items():
            if new_rows:
                insert(engine, db, table, new_rows)
    assert calls(engine, db) == [["7", "inbound", "2026-03-02 13:55:00", "0", "SALE", "[]", "[]", "[]", "2", str(T0), str(T0 + 60)]]
    assert rows(engine, f"SELECT event_id, toUnixTimestamp(received_at) FROM {db}.raw_events ORDER BY event_id") == [
        ["e1", str(T0)], ["e2", str(T0 + 60)]]
    # A swapped order is not a duplicate: an older event whose only delivery came last
    # is simply the newest receipt, as in the views before 0007.
    insert(engine, db, "call_events_store_v2", [call("e4", T0 + 180, event="call-disposition-modified", disposition_code="LATER")])
    assert rows(engine, f"SELECT disposition_code, events FROM {db}.calls") == [["LATER", "3"]]


def test_a_redone_block_changes_nothing(engine, db):
    # 18.16 has no insert deduplication tokens: a block redone after a crash inserts
    # identical rows (same loaded_at_ms) a second time, as another part. Every state is
    # idempotent under that, before and after merges.
    apply_all(engine, db)
    block = [
        call("e1", T0, direction="inbound", started_at=T0 - 300, abandoned=0, recording_urls=["https://r/1"],
             agent_ids=[21], agent_names=["Dev"], agent_actions=["Answered"], agent_types=["Normal call"]),
        call("e2", T0 + 60, event="call-disposition-saved", disposition_code="SALE"),
    ]
    contact = [{"event_id": "c1", "tenant": "acme", "event": "contact-created", "contact_id": 5, "key_day": DAY,
                "received_at": T0, "received_at_ms": T0 * 1000, "first_name": "Maria", "loaded_at_ms": (T0 + 1) * 1000}]
    raw = [{"event_id": "e1", "tenant": "acme", "event": "call-ended", "status": "normalized", "received_at": T0,
            "received_at_ms": T0 * 1000, "payload": "{}", "loaded_at_ms": (T0 + 1) * 1000}]
    queries = [
        CALL_QUERY.format(db=db),
        f"SELECT * FROM {db}.call_agents",
        f"SELECT contact_id, first_name, contact_events, events FROM {db}.contacts",
        f"SELECT event_id, call_id, disposition_code FROM {db}.call_events ORDER BY event_id",
        f"SELECT event_id, loaded_at FROM {db}.raw_events",
        f"SELECT DISTINCT tenant, day FROM {db}.tenant_days",
    ]

    def load():
        insert(engine, db, "call_events_store_v2", block)
        insert(engine, db, "contact_events_store_v2", contact)
        insert(engine, db, "raw_events_store_v2", raw)

    load()
    once = [rows(engine, q) for q in queries]
    assert once[0][0][8] == "2" and len(once[4]) == 1
    load()
    assert [rows(engine, q) for q in queries] == once
    for table in ("calls_state", "call_events_store_v2", "contacts_state", "raw_events_store_v2"):
        engine.query(f"OPTIMIZE TABLE {db}.{table} FINAL")
    assert [rows(engine, q) for q in queries] == once
    # Redone with a fresh loaded_at_ms (a loader without a block log): the same values,
    # so only raw_events' loaded_at moves.
    later = lambda rs: [{**r, "loaded_at_ms": r["loaded_at_ms"] + 5000} for r in rs]  # noqa: E731
    insert(engine, db, "call_events_store_v2", later(block))
    insert(engine, db, "contact_events_store_v2", later(contact))
    insert(engine, db, "raw_events_store_v2", later(raw))
    again = [rows(engine, q) for q in queries]
    assert again[:4] + again[5:] == once[:4] + once[5:]
    assert again[4] == [["e1", "2026-03-02 14:00:06"]]


def test_a_replayed_event_replaces_its_older_normalization(engine, db):
    # transform replay writes an event again with the same event id and receipt time, in
    # a later block (a larger loaded_at_ms): its values win over the event's old row, in
    # separate parts and once merged, but it stays as old as its receipt.
    apply_all(engine, db)
    insert(engine, db, "call_events_store_v2", [call("e1", T0, loaded_s=T0 + 1, disposition_code="OLD", sub_type="x")])
    insert(engine, db, "call_events_store_v2", [call("e2", T0 + 60, loaded_s=T0 + 61, sub_type="newer")])
    insert(engine, db, "call_events_store_v2", [call("e1", T0, loaded_s=T0 + 86400, disposition_code="FIXED", sub_type="y")])
    query = f"SELECT disposition_code, sub_type, events, toUnixTimestamp(last_event_at) FROM {db}.calls"
    assert rows(engine, query) == [["FIXED", "newer", "2", str(T0 + 60)]]
    assert rows(engine, f"SELECT disposition_code FROM {db}.call_events WHERE event_id = 'e1'") == [["FIXED"]]
    engine.query(f"OPTIMIZE TABLE {db}.calls_state FINAL")
    engine.query(f"OPTIMIZE TABLE {db}.call_events_store_v2 FINAL")
    assert rows(engine, query) == [["FIXED", "newer", "2", str(T0 + 60)]]
    # raw_events: the replay's status replaces the old one, one row.
    raw = {"event_id": "r1", "tenant": "acme", "event": "call-x", "received_at": T0, "received_at_ms": T0 * 1000, "payload": "{}"}
    insert(engine, db, "raw_events_store_v2", [{**raw, "status": "unrecognized", "loaded_at_ms": (T0 + 1) * 1000}])
    insert(engine, db, "raw_events_store_v2", [{**raw, "status": "normalized", "loaded_at_ms": (T0 + 86400) * 1000}])
    assert rows(engine, f"SELECT status, toUnixTimestamp(loaded_at) FROM {db}.raw_events") == [["normalized", str(T0 + 86400)]]
    assert rows(engine, f"SELECT count() FROM {db}.raw_events WHERE status = 'unrecognized'") == [["0"]]


def test_a_replay_that_empties_a_value_needs_a_rebuild(engine, db):
    # The live states only take values in: a replay whose fixed row no longer has a value
    # (or a recording URL) leaves the old one in `calls` until the month is rebuilt from
    # the per-event table (scripts/backfill-0007 --phase rebuild), which `call_events`
    # shows at once.
    apply_all(engine, db)
    insert(engine, db, "call_events_store_v2", [call("e0", T0 - 60, disposition_code="FIRST")])
    insert(engine, db, "call_events_store_v2", [call("e1", T0, talk_time_s=10, disposition_code="WRONG", recording_urls=["https://r/x"])])
    insert(engine, db, "call_events_store_v2", [call("e1", T0, loaded_s=T0 + 86400)])  # the replay: no value
    assert rows(engine, f"SELECT talk_time_s, disposition_code = '' FROM {db}.call_events WHERE event_id = 'e1'") == [["\\N", "1"]]
    query = f"SELECT talk_time_s, disposition_code, recording_urls, events FROM {db}.calls"
    assert rows(engine, query) == [["10", "WRONG", "['https://r/x']", "2"]]
    backfill_module().rebuild(Backfill(engine, db), ["202603"])
    assert rows(engine, query) == [["\\N", "FIRST", "[]", "2"]]


class Backfill:
    """The part of scripts/backfill-0007's job that `rebuild` uses."""

    def __init__(self, engine, db):
        self.engine, self.db, self.log = engine, db, lambda *a: None


def backfill_module():
    import importlib.machinery
    import importlib.util
    path = Path(__file__).parent.parent / "scripts" / "backfill-0007"
    loader = importlib.machinery.SourceFileLoader("backfill_0007", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("backfill_0007", loader))
    loader.exec_module(module)
    return module


def test_equal_receipt_times_do_not_depend_on_insert_order(engine, db):
    # Two events of one call received in the same millisecond and loaded in one block:
    # the larger value wins, whatever the order of rows and parts.
    apply_all(engine, db)
    a = call("e1", T0, disposition_code="AAA", talk_time_s=10)
    b = call("e2", T0, disposition_code="BBB", talk_time_s=5)
    query = f"SELECT disposition_code, talk_time_s FROM {db}.calls"
    insert(engine, db, "call_events_store_v2", [b])
    insert(engine, db, "call_events_store_v2", [a])
    first = rows(engine, query)
    engine.query(f"TRUNCATE TABLE {db}.calls_state")
    insert(engine, db, "call_events_store_v2", [a, b])
    assert rows(engine, query) == first == [["BBB", "10"]]


def test_a_sparse_event_joins_its_call(engine, db):
    # A call-disposition-saved without a start time received first: the loader gave the
    # call the receipt day (the next day here) and reuses it for the call-ended that
    # follows, so the call is one row. Readers find it with the day bound's + 1.
    apply_all(engine, db)
    late = T0 + 11 * 3600  # 2026-03-03 01:00 UTC
    insert(engine, db, "call_events_store_v2", [
        call("e2", late, event="call-disposition-saved", disposition_code="SALE", key_day="2026-03-03"),
        call("e1", late + 5, direction="inbound", started_at=T0 + 36000 - 120, key_day="2026-03-03"),
    ])
    frm, to = T0 - 3600, T0 + 36000  # up to 2026-03-02 24:00
    got = rows(engine, (
        f"SELECT call_id, disposition_code, toString(started_at) FROM {db}.calls WHERE tenant IN ('acme') "
        f"AND key_day BETWEEN toDate(toDateTime({frm}), 'UTC') AND toDate(toDateTime({to}), 'UTC') + 1 "
        f"AND started_at >= toDateTime({frm}) AND started_at <= toDateTime({to})"))
    assert got == [["7", "SALE", "2026-03-02 23:58:00"]]


def test_call_agents_come_from_the_newest_event_listing_agents(engine, db):
    apply_all(engine, db)
    insert(engine, db, "call_events_store_v2", [
        call("e1", T0, agent_ids=[1], agent_names=["Old"], agent_actions=["Answered"], agent_types=["Normal call"]),
        call("e2", T0 + 60, started_at=T0 - 300, agent_ids=[21, 34], agent_names=["Dev", "Lena"],
             agent_actions=["Answered", "Contact hangup"], agent_types=["Normal call", "Transfer Call"]),
        call("e3", T0 + 120, event="call-disposition-saved"),
    ])
    got = rows(engine, f"SELECT call_id, agent_id, agent_name, agent_action, agent_type, toString(call_started_at) FROM {db}.call_agents ORDER BY agent_id")
    assert got == [["7", "21", "Dev", "Answered", "Normal call", "2026-03-02 13:55:00"],
                   ["7", "34", "Lena", "Contact hangup", "Transfer Call", "2026-03-02 13:55:00"]]


def test_contacts_lists_and_messages_merge_without_erasing(engine, db):
    apply_all(engine, db)
    common = {"tenant": "acme", "key_day": DAY}

    def at(s):
        return {"received_at": s, "received_at_ms": s * 1000, "loaded_at_ms": (s + 1) * 1000}

    insert(engine, db, "contact_events_store_v2", [
        {**common, **at(T0), "event_id": "c1", "event": "contact-created", "contact_id": 5, "first_name": "Maria",
         "last_name": "Okafor", "email": "m@x.org", "phone": "+1 (555) 765-4321", "additional_fields": '{"plan":"gold"}',
         "integrations": "{}"},
        {**common, **at(T0 + 60), "event_id": "c2", "event": "contact-modified", "contact_id": 5, "last_name": "Okafor-Reyes",
         "additional_fields": "{}", "integrations": "{}"},
        # the contact inside a call event
        {**common, **at(T0 + 120), "event_id": "e9", "event": "call-ended", "contact_id": 5, "phone": "+15557654321"},
    ])
    assert rows(engine, f"SELECT full_name, email, phone_digits, additional_fields, contact_events, events FROM {db}.contacts") == [
        ["Maria Okafor-Reyes", "m@x.org", "15557654321", '{"plan":"gold"}', "2", "3"]
    ]
    insert(engine, db, "contact_list_events_store_v2", [
        {**common, **at(T0), "event_id": "l1", "event": "contact-list-created", "list_id": 12, "name": "Renewals", "size": 2, "member_ids": [1, 2]},
        {**common, **at(T0 + 60), "event_id": "l2", "event": "contact-list-modified", "list_id": 12},
    ])
    assert rows(engine, f"SELECT list_id, name, size, member_ids, events FROM {db}.contact_lists") == [
        ["12", "Renewals", "2", "[1,2]", "2"]
    ]
    insert(engine, db, "message_events_store_v2", [
        {**common, **at(T0), "event_id": "m1", "event": "message-sent", "message_id": "SM1", "direction": "outbound",
         "from_number": "+1 555-0100", "text": "hi", "status": "queued"},
        {**common, **at(T0 + 60), "event_id": "m2", "event": "message-sent", "message_id": "SM1", "direction": "outbound", "status": "delivered"},
    ])
    assert rows(engine, f"SELECT message_id, from_digits, text, status, events FROM {db}.messages") == [
        ["SM1", "15550100", "hi", "delivered", "2"]
    ]


def test_dead_letters_show_a_redone_failure_once(engine, db):
    apply_all(engine, db)
    letter = {"stage": "transform", "reason": "no id", "event_id": "e1", "source_topic": "webhooks.raw",
              "source_partition": 1, "source_offset": 9, "payload": "{}"}
    insert(engine, db, "dead_letters_store_v2", [
        {**letter, "failed_at": T0, "failed_at_ms": T0 * 1000, "loaded_at_ms": (T0 + 1) * 1000},
        {**letter, "reason": "no id (again)", "failed_at": T0 + 3600 * 24 * 40, "failed_at_ms": (T0 + 3600 * 24 * 40) * 1000,
         "loaded_at_ms": (T0 + 3600 * 24 * 40 + 1) * 1000},
    ])
    insert(engine, db, "dead_letters_store_v2", [{**letter, "failed_at": T0, "failed_at_ms": T0 * 1000, "loaded_at_ms": (T0 + 1) * 1000}])
    assert rows(engine, f"SELECT reason, toUnixTimestamp(failed_at), toUnixTimestamp(loaded_at) FROM {db}.dead_letters") == [
        ["no id", str(T0), str(T0 + 1)]]


def test_raw_events_show_each_delivery_once(engine, db):
    apply_all(engine, db)
    raw = {"tenant": "acme", "payload": "{}", "loaded_at_ms": 1001000}
    insert(engine, db, "raw_events_store_v2", [
        {**raw, "event_id": "e1", "event": "call-ended", "status": "normalized", "received_at": 1000, "received_at_ms": 1000000},
        {**raw, "event_id": "e2", "event": "x-y", "status": "unrecognized", "received_at": 2000, "received_at_ms": 2000000},
    ])
    insert(engine, db, "raw_events_store_v2", [
        {**raw, "event_id": "e1", "event": "call-ended", "status": "normalized", "received_at": 1000, "received_at_ms": 1000000},
    ])
    got = rows(engine, f"SELECT event_id, toUnixTimestamp(received_at), status, toUnixTimestamp(loaded_at) FROM {db}.raw_events ORDER BY event_id")
    assert got == [["e1", "1000", "normalized", "1001"], ["e2", "2000", "unrecognized", "1001"]]
    assert rows(engine, f"SELECT DISTINCT tenant FROM {db}.tenant_days") == [["acme"]]


def test_readers_prune_by_tenant_and_day(engine, db):
    # 2 tenants x 90 days x 200 calls: a reader's tenant and key_day filter must be pushed
    # below the views' GROUP BY and prune (max_rows_to_read fails the query otherwise).
    apply_all(engine, db)
    engine.query(
        f"INSERT INTO {db}.call_events_store_v2 (event_id, tenant, event, call_id, key_day, received_at, received_at_ms, "
        "direction, started_at, agent_ids, agent_names, agent_actions, agent_types, loaded_at_ms) "
        "SELECT toString(number), if(number % 2 = 0, 'acme', 'beta'), 'call-ended', toInt64(number), "
        "toDate('2026-01-01') + intDiv(number, 400), toDateTime('2026-01-01 00:00:00', 'UTC') + intDiv(number, 400) * 86400 + 60, "
        "toUInt64(1767225600000 + intDiv(number, 400) * 86400000 + 60000), 'inbound', "
        "toDateTime('2026-01-01 00:00:00', 'UTC') + intDiv(number, 400) * 86400, [toInt64(1)], ['Dev'], ['Answered'], ['Normal call'], "
        "toUInt64(1767225600000 + intDiv(number, 400) * 86400000 + 61000) FROM numbers(36000)"
    )
    for table in ("calls_state", "call_events_store_v2"):
        engine.query(f"OPTIMIZE TABLE {db}.{table} FINAL")
    frm, to = 1768521600, 1768607999  # 2026-01-16, one day
    window = (f"tenant IN ('acme') AND key_day BETWEEN toDate(toDateTime({frm}), 'UTC') AND toDate(toDateTime({to}), 'UTC') + 1 "
              f"AND started_at >= toDateTime({frm}) AND started_at <= toDateTime({to})")
    limit = {"max_rows_to_read": 8192 * 3, "read_overflow_mode": "throw"}
    assert rows(engine, f"SELECT count() FROM {db}.calls WHERE {window}") == [["200"]]
    assert engine.query(f"SELECT count() FROM {db}.calls WHERE {window}", **limit).strip() == "200"
    agents = window.replace("started_at", "call_started_at")
    assert engine.query(f"SELECT count() FROM {db}.call_agents WHERE {agents}", **limit).strip() == "200"
    with pytest.raises(Exception):
        engine.query(f"SELECT count() FROM {db}.calls WHERE started_at >= toDateTime({frm}) AND started_at <= toDateTime({to})", **limit)
    assert engine.query(f"SELECT count() FROM {db}.call_events WHERE tenant = 'acme' AND key_day = '2026-01-16'", **limit).strip() == "200"


def test_insert_deduplication_tokens_drop_a_repeated_block(engine, db):
    # What the loader does on servers that have tokens (22.2+): the table setting and a
    # token per block. A redone block with the same token adds nothing, even when its
    # rows were cut differently; a block with another token is inserted.
    if engine.name == "server":
        pytest.skip("ClickHouse 18.16 has no insert_deduplication_token; the states are idempotent under a redone block instead")
    apply_all(engine, db)
    engine.query(f"ALTER TABLE {db}.raw_events_store_v2 MODIFY SETTING non_replicated_deduplication_window = 10000")
    insert_sql = (
        f"INSERT INTO {db}.raw_events_store_v2 (event_id, tenant, event, status, received_at, received_at_ms, payload, loaded_at_ms) "
        "SETTINGS insert_deduplication_token = '{token}' VALUES ('{id}', 'acme', 'call-ended', 'normalized', 1000, 1000000, '{{}}', 1001000)"
    )
    engine.query(insert_sql.format(token="g:t:0:0-9/raw_events_store_v2", id="e1"))
    engine.query(insert_sql.format(token="g:t:0:0-9/raw_events_store_v2", id="e1-other-content"))
    assert rows(engine, f"SELECT count() FROM {db}.raw_events_store_v2") == [["1"]]
    engine.query(insert_sql.format(token="g:t:0:10-19/raw_events_store_v2", id="e2"))
    assert rows(engine, f"SELECT count() FROM {db}.raw_events_store_v2") == [["2"]]


def test_raw_payload_retention(engine, db):
    # README, "Retention": where TTL exists, a column TTL empties old payloads (the loader
    # sets it); on 18.16 `loader retention --apply` runs the same as an UPDATE mutation.
    # Counts and statuses stay. tests/tests/retention.rs runs the loader's own statements.
    apply_all(engine, db)
    now = int(time.time())
    raw = {"tenant": "acme", "event": "call-ended", "status": "normalized", "payload": '{"id": 1}', "loaded_at_ms": 1}
    insert(engine, db, "raw_events_store_v2", [
        {**raw, "event_id": "old", "received_at": 1767225600, "received_at_ms": 1767225600000},  # 2026-01-01
        {**raw, "event_id": "new", "received_at": now, "received_at_ms": now * 1000},
    ])
    if engine.name == "server":
        engine.query(f"ALTER TABLE {db}.raw_events_store_v2 UPDATE payload = '' "
                     f"WHERE received_at < toDateTime({now - 30 * 86400}, 'UTC') AND payload != ''")
        wait_for_mutations(engine, db)
    else:
        engine.query(f"ALTER TABLE {db}.raw_events_store_v2 MODIFY COLUMN payload TTL received_at + toIntervalDay(30)")
        engine.query(f"OPTIMIZE TABLE {db}.raw_events_store_v2 FINAL")
    got = rows(engine, f"SELECT event_id, payload, status FROM {db}.raw_events ORDER BY event_id")
    assert got == [["new", '{"id": 1}', "normalized"], ["old", "", "normalized"]]


def wait_for_mutations(engine, db):
    """18.16 has no mutations_sync: poll until the database's mutations are done."""
    for _ in range(100):
        if rows(engine, f"SELECT count() FROM system.mutations WHERE database = '{db}' AND is_done = 0") == [["0"]]:
            return
        time.sleep(0.1)
    raise AssertionError("mutations not done")


def test_unmapped_fields_aggregate_per_path_idempotently(engine, db):
    # One row per (delivery, path); the view counts distinct deliveries, keeps first and
    # last receipt and the newest non-empty example, whatever is written twice.
    apply_all(engine, db)

    def field(event_id, at_s, path, example, kind="unmapped", expected="", found="", loaded_s=None):
        return {"event_id": event_id, "tenant": "acme", "event": "call-ended", "received_at": at_s,
                "received_at_ms": at_s * 1000, "kind": kind, "path": path, "expected": expected, "found": found,
                "example": example, "loaded_at_ms": (loaded_s or at_s + 1) * 1000}

    block = [
        field("e1", T0, "queueName", '"Main"'),
        field("e1", T0, "duration", '"26"', kind="mistyped", expected="integer", found="string"),
        field("e2", T0 + 86400, "queueName", '"Overflow"'),
    ]
    insert(engine, db, "unmapped_fields_store", block)
    insert(engine, db, "unmapped_fields_store", block)  # a redone block
    insert(engine, db, "unmapped_fields_store", [field("e3", T0 + 60, "queueName", "")])  # an erased example
    query = (f"SELECT path, kind, expected, found, deliveries, toUnixTimestamp(first_seen), toUnixTimestamp(last_seen), example "
             f"FROM {db}.unmapped_fields WHERE tenant = 'acme' ORDER BY path")
    want = [
        ["duration", "mistyped", "integer", "string", "1", str(T0), str(T0), '"26"'],
        ["queueName", "unmapped", "", "", "3", str(T0), str(T0 + 86400), '"Overflow"'],
    ]
    assert rows(engine, query) == want
    engine.query(f"OPTIMIZE TABLE {db}.unmapped_fields_state FINAL")
    assert rows(engine, query) == want


def test_statement_splitting_matches_the_loader():
    # The loader (warehouse/src/migrations.rs) drops comment lines and splits on ';'.
    for path in MIGRATIONS:
        for sql in statements(path, "db"):
            assert not re.search(r"^\s*--", sql, re.M), sql
            assert "{db}" not in sql
