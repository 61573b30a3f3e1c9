"""Every migration, and the merge semantics of the views, on both ClickHouse engines the
project supports: the development server (ClickHouse 18.16, over HTTP at CLICKHOUSE_URL)
and a current engine (chdb, in process). SQL that only one of them accepts fails here.
"""

import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

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
            Chdb._session = session.Session(tempfile.mkdtemp(prefix="sb-chdb-"))
        self.session = Chdb._session

    def query(self, sql: str) -> str:
        return str(self.session.query(sql, "TSV"))


class Server:
    name = "server"

    def __init__(self):
        self.url = os.environ.get("CLICKHOUSE_URL")
        assert self.url, "CLICKHOUSE_URL is not set: run scripts/test.sh, or scripts/dev-services up and source .dev-services.env"

    def query(self, sql: str) -> str:
        url = self.url + "/?" + urllib.parse.urlencode({"max_execution_time": 20})
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
    (code 15) was applied before; 18.16 has no ADD COLUMN IF NOT EXISTS."""
    return sql.startswith("ALTER TABLE ") and " ADD COLUMN " in sql


def migrate(engine, db):
    """Applies every migration the way the loader does; raises on the first failure."""
    for path in MIGRATIONS:
        for sql in statements(path, db):
            try:
                engine.query(sql)
            except Exception as e:  # noqa: BLE001 - the loader tolerates this one case
                if not (adds_a_column(sql) and "Code: 15." in str(e)):
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
    assert {"raw_events", "raw_events_store", "call_events", "call_events_store", "calls"} <= tables


CALL_COLUMNS = "event_id, tenant, event, call_id, received_at, received_at_ms, direction, started_at, abandoned, disposition_code, recording_urls, tags"


def test_calls_keep_the_newest_non_empty_value_and_the_first_receipt(engine, db):
    apply_all(engine, db)
    engine.query(
        f"INSERT INTO {db}.call_events_store ({CALL_COLUMNS}) VALUES "
        "('e1', 'acme', 'call-ended', 7, 1000, 1000000, 'inbound', 1772460300, 0, '', [], ['vip']),"
        "('e2', 'acme', 'call-disposition-saved', 7, 2000, 2000000, '', NULL, NULL, 'SALE', ['https://r/1'], []),"
        # a late retry of e1: same event, so it must not count again nor win
        "('e1', 'acme', 'call-ended', 7, 3000, 3000000, 'inbound', 1772460300, 1, '', [], ['vip'])"
    )
    got = rows(
        engine,
        f"SELECT call_id, direction, toString(started_at), abandoned, disposition_code, "
        f"recording_urls, tags, events FROM {db}.calls",
    )
    assert got == [["7", "inbound", "2026-03-02 14:05:00", "0", "SALE", "['https://r/1']", "['vip']", "2"]]
    assert rows(engine, f"SELECT count() FROM {db}.call_events") == [["2"]]


def test_a_replayed_event_replaces_its_row_in_place(engine, db):
    # transform replay writes an event again with the same event id and receipt time;
    # the row inserted last must win (separate inserts: separate parts, as in the loader),
    # also once the parts are merged.
    apply_all(engine, db)
    engine.query(
        f"INSERT INTO {db}.call_events_store ({CALL_COLUMNS}) VALUES "
        "('e1', 'acme', 'call-ended', 7, 1000, 1000000, 'inbound', NULL, 0, 'OLD', [], [])"
    )
    engine.query(
        f"INSERT INTO {db}.call_events_store ({CALL_COLUMNS}) VALUES "
        "('e1', 'acme', 'call-ended', 7, 1000, 1000000, 'inbound', NULL, 0, 'FIXED', [], [])"
    )
    query = f"SELECT disposition_code, events FROM {db}.calls"
    assert rows(engine, query) == [["FIXED", "1"]]
    engine.query(f"OPTIMIZE TABLE {db}.call_events_store FINAL")
    assert rows(engine, query) == [["FIXED", "1"]]


def test_insert_deduplication_tokens_drop_a_repeated_block(engine, db):
    # What the loader does on servers that have tokens (22.2+): the table setting and a
    # token per block. A redone block with the same token adds nothing, even when its
    # rows were cut differently; a block with another token is inserted.
    if engine.name == "server":
        pytest.skip("ClickHouse 18.16 has no insert_deduplication_token; the loader detects that and relies on the merged views")
    apply_all(engine, db)
    engine.query(f"ALTER TABLE {db}.raw_events_store MODIFY SETTING non_replicated_deduplication_window = 10000")
    insert = (
        f"INSERT INTO {db}.raw_events_store (event_id, tenant, event, status, received_at, received_at_ms, payload) "
        "SETTINGS insert_deduplication_token = '{token}' VALUES ('{id}', 'acme', 'call-ended', 'normalized', 1000, 1000000, '{{}}')"
    )
    engine.query(insert.format(token="g:t:0:0-9/raw_events_store", id="e1"))
    engine.query(insert.format(token="g:t:0:0-9/raw_events_store", id="e1-other-content"))
    assert rows(engine, f"SELECT count() FROM {db}.raw_events_store") == [["1"]]
    engine.query(insert.format(token="g:t:0:10-19/raw_events_store", id="e2"))
    assert rows(engine, f"SELECT count() FROM {db}.raw_events_store") == [["2"]]


def test_raw_events_show_each_delivery_once(engine, db):
    apply_all(engine, db)
    engine.query(
        f"INSERT INTO {db}.raw_events_store (event_id, tenant, event, status, received_at, received_at_ms, payload) VALUES "
        "('e1', 'acme', 'call-ended', 'normalized', 1000, 1000000, '{}'),"
        "('e1', 'acme', 'call-ended', 'normalized', 3000, 3000000, '{}'),"
        "('e2', 'acme', 'x-y', 'unrecognized', 2000, 2000000, '{}')"
    )
    got = rows(engine, f"SELECT event_id, toUnixTimestamp(received_at), status FROM {db}.raw_events ORDER BY event_id")
    assert got == [["e1", "1000", "normalized"], ["e2", "2000", "unrecognized"]]


def test_statement_splitting_matches_the_loader():
    # The loader (warehouse/src/migrations.rs) drops comment lines and splits on ';'.
    for path in MIGRATIONS:
        for sql in statements(path, "db"):
            assert not re.search(r"^\s*--", sql, re.M), sql
            assert "{db}" not in sql


def test_call_agents_come_from_the_newest_event_listing_agents(engine, db):
    apply_all(engine, db)
    engine.query(
        f"INSERT INTO {db}.call_events_store (event_id, tenant, event, call_id, received_at, received_at_ms, "
        "agent_ids, agent_names, agent_actions, agent_types) VALUES "
        "('e1', 'acme', 'call-ended', 7, 1000, 1000000, [1], ['Old'], ['Answered'], ['Normal call']),"
        "('e2', 'acme', 'call-ended', 7, 2000, 2000000, [21, 34], ['Dev', 'Lena'], ['Answered', 'Contact hangup'], ['Normal call', 'Transfer Call']),"
        "('e3', 'acme', 'call-disposition-saved', 7, 3000, 3000000, [], [], [], [])"
    )
    got = rows(engine, f"SELECT call_id, agent_id, agent_name, agent_action, agent_type FROM {db}.call_agents ORDER BY agent_id")
    assert got == [["7", "21", "Dev", "Answered", "Normal call"], ["7", "34", "Lena", "Contact hangup", "Transfer Call"]]


def test_contacts_lists_and_messages_merge_without_erasing(engine, db):
    apply_all(engine, db)
    engine.query(
        f"INSERT INTO {db}.contact_events_store (event_id, tenant, event, contact_id, received_at, received_at_ms, "
        "first_name, last_name, email, phone, additional_fields, integrations) VALUES "
        "('c1', 'acme', 'contact-created', 5, 1000, 1000000, 'Maria', 'Okafor', 'm@x.org', '+1 (555) 765-4321', '{\"plan\":\"gold\"}', '{}'),"
        "('c2', 'acme', 'contact-modified', 5, 2000, 2000000, '', 'Okafor-Reyes', '', '', '{}', '{}')"
    )
    assert rows(engine, f"SELECT full_name, email, phone_digits, additional_fields, contact_events FROM {db}.contacts") == [
        ["Maria Okafor-Reyes", "m@x.org", "15557654321", '{"plan":"gold"}', "2"]
    ]
    engine.query(
        f"INSERT INTO {db}.contact_list_events_store (event_id, tenant, event, list_id, received_at, received_at_ms, "
        "name, size, member_ids) VALUES "
        "('l1', 'acme', 'contact-list-created', 12, 1000, 1000000, 'Renewals', 2, [1, 2]),"
        "('l2', 'acme', 'contact-list-modified', 12, 2000, 2000000, '', NULL, [])"
    )
    assert rows(engine, f"SELECT list_id, name, size, member_ids, events FROM {db}.contact_lists") == [
        ["12", "Renewals", "2", "[1,2]", "2"]
    ]
    engine.query(
        f"INSERT INTO {db}.message_events_store (event_id, tenant, event, message_id, received_at, received_at_ms, "
        "direction, from_number, text, status) VALUES "
        "('m1', 'acme', 'message-sent', 'SM1', 1000, 1000000, 'outbound', '+1 555-0100', 'hi', 'queued'),"
        "('m2', 'acme', 'message-sent', 'SM1', 2000, 2000000, 'outbound', '', '', 'delivered')"
    )
    assert rows(engine, f"SELECT message_id, from_digits, text, status FROM {db}.messages") == [
        ["SM1", "15550100", "hi", "delivered"]
    ]


def test_dead_letters_show_a_redone_failure_once(engine, db):
    apply_all(engine, db)
    engine.query(
        f"INSERT INTO {db}.dead_letters_store (stage, reason, event_id, source_topic, source_partition, source_offset, "
        "payload, failed_at, failed_at_ms) VALUES "
        "('transform', 'no id', 'e1', 'webhooks.raw', 1, 9, '{}', 1000, 1000000),"
        "('transform', 'no id', 'e1', 'webhooks.raw', 1, 9, '{}', 2000, 2000000)"
    )
    assert rows(engine, f"SELECT reason, toUnixTimestamp(failed_at) FROM {db}.dead_letters") == [["no id", "1000"]]
