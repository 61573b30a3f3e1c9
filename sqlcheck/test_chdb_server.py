"""scripts/chdb-server.py, the test fixture that puts a current ClickHouse engine (chdb)
behind ClickHouse's HTTP interface: the requests are shaped exactly as the Rust
`clickhouse` crate 0.15 sends them (query.rs `do_execute`, insert_formatted.rs
`init_request`, lib.rs `insert_metadata_query`), and the answers are checked the way the
crate and the loader read them (status, `X-ClickHouse-Exception-Code`, `Code: N.` in the
body, lz4 response frames, RowBinaryWithNamesAndTypes)."""

import http.client
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import lz4.block
import lz4.frame
import pytest
from clickhouse_cityhash.cityhash import CityHash128

SERVER = Path(__file__).parent.parent / "scripts" / "chdb-server.py"
USER_AGENT = "clickhouse-rs/0.15.3 (lv:rust/1.88; os:linux)"


# --- the fixture process ----------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ChdbServer:
    """scripts/chdb-server.py run as a subprocess with this Python (the venv's)."""

    def __init__(self, data_dir, log_path, port=None):
        self.data_dir, self.log_path = data_dir, log_path
        self.port = port or free_port()
        self.proc = None
        self.start()

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--port", str(self.port), "--data", str(self.data_dir)],
            stdout=self.log, stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.request("GET", "/ping", close=True)[2] == b"Ok.\n":
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chdb-server did not start:\n{Path(self.log_path).read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.log.close()
        return code

    def connection(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(self, method, path, body=None, headers=None, conn=None, close=False):
        """(status, headers, body) of one request, on `conn` (kept alive) or a new one."""
        own = conn is None
        conn = conn or self.connection()
        try:
            chunked = body is not None and not isinstance(body, (bytes, str))
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            if own or close:
                conn.close()

    # The crate's request shapes -----------------------------------------------------------

    def query(self, sql, database=None, settings=None, default_format=None, conn=None, accept_lz4=True):
        """Client::query(sql).execute()/fetch*(): query.rs do_execute — POST with
        `default_format` (RowBinary[WithNamesAndTypes] for fetch), `database`, the
        settings as URL parameters, the SQL as the whole body with Content-Length, and
        `Accept-Encoding: lz4`. Returns (status, headers, decoded body)."""
        params = []
        if default_format:
            params.append(("default_format", default_format))
        if database:
            params.append(("database", database))
        params += list((settings or {}).items())
        headers = {"User-Agent": USER_AGENT, "X-ClickHouse-User": "default", "X-ClickHouse-Key": ""}
        if accept_lz4:
            headers["Accept-Encoding"] = "lz4"
        status, h, body = self.request("POST", "/?" + urllib.parse.urlencode(params), sql.encode(), headers, conn)
        if h.get("content-encoding") == "lz4":
            body = lz4.frame.decompress(body)
        return status, h, body

    def ok(self, sql, **kw):
        status, h, body = self.query(sql, **kw)
        assert status == 200, body.decode(errors="replace")
        return body

    def insert(self, table, columns, data, fmt="RowBinary", database=None, settings=None, conn=None,
               compress=True, chunk=None):
        """Client::insert::<T>(table) … write … end(): insert_formatted.rs init_request —
        POST with `database`, `query=INSERT INTO `t`(`a`,`b`) FORMAT RowBinary` (or
        RowBinaryWithNamesAndTypes with validation), `decompress=1`, then the settings
        (insert.with_setting), a chunked body of LZ4 blocks in ClickHouse's native
        framing (one block per chunk). Returns (status, headers, body)."""
        names = ",".join(f"`{c}`" for c in columns)
        params = []
        if database:
            params.append(("database", database))
        params.append(("query", f"INSERT INTO `{table}`({names}) FORMAT {fmt}"))
        if compress:
            params.append(("decompress", "1"))
        params += list((settings or {}).items())
        size = chunk or max(1, len(data))
        pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        blocks = [native_block(p) if compress else p for p in pieces]
        headers = {"User-Agent": USER_AGENT, "X-ClickHouse-User": "default", "X-ClickHouse-Key": "",
                   "Transfer-Encoding": "chunked"}
        return self.request("POST", "/?" + urllib.parse.urlencode(params), iter(blocks), headers, conn)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("chdb-server")
    srv = ChdbServer(base / "data", base / "server.log")
    yield srv
    assert srv.stop() == 0, "SIGTERM must stop the fixture cleanly"


@pytest.fixture
def db(server):
    name = "fx_" + uuid.uuid4().hex[:10]
    server.ok(f"CREATE DATABASE {name}")
    yield name
    server.ok(f"DROP DATABASE IF EXISTS {name}")


# --- ClickHouse wire formats ------------------------------------------------------------


def checksum(block):
    h = CityHash128(block)
    return struct.pack("<QQ", h >> 64, h & (2**64 - 1))


def native_block(raw):
    """One block of ClickHouse's compressed framing, as the crate's lz4::compress writes it."""
    comp = lz4.block.compress(raw, store_size=False)
    block = struct.pack("<BII", 0x82, 9 + len(comp), len(raw)) + comp
    return checksum(block) + block


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode(type_, value):
    """A RowBinary value of a ClickHouse type (the types the loader's tables use)."""
    if type_.startswith("Nullable("):
        return b"\x01" if value is None else b"\x00" + encode(type_[9:-1], value)
    if type_.startswith("LowCardinality("):
        return encode(type_[15:-1], value)
    if type_.startswith("Array("):
        return varint(len(value)) + b"".join(encode(type_[6:-1], v) for v in value)
    if type_ == "String":
        raw = value.encode()
        return varint(len(raw)) + raw
    if type_.startswith("DateTime"):
        return struct.pack("<I", value)
    return struct.pack({"Int32": "<i", "Int64": "<q", "UInt64": "<Q", "UInt8": "<B"}[type_], value)


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        assert self.pos + n <= len(self.data), "RowBinary ended early"
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self):
        shift = result = 0
        while True:
            b = self.take(1)[0]
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    def value(self, type_):
        if type_.startswith("Nullable("):
            return None if self.take(1) == b"\x01" else self.value(type_[9:-1])
        if type_.startswith("LowCardinality("):
            return self.value(type_[15:-1])
        if type_.startswith("Array("):
            return [self.value(type_[6:-1]) for _ in range(self.varint())]
        if type_ == "String":
            return self.take(self.varint()).decode()
        if type_.startswith("DateTime"):
            return struct.unpack("<I", self.take(4))[0]
        fmt = {"Int32": "<i", "Int64": "<q", "UInt64": "<Q", "UInt8": "<B"}[type_]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def done(self):
        return self.pos == len(self.data)


def read_rbwnat(data):
    """(names, types, rows) of a RowBinaryWithNamesAndTypes result."""
    r = Reader(data)
    n = r.varint()
    names = [r.value("String") for _ in range(n)]
    types = [r.value("String") for _ in range(n)]
    rows = []
    while not r.done():
        rows.append(tuple(r.value(t) for t in types))
    return names, types, rows


def read_rowbinary(data, types):
    r = Reader(data)
    rows = []
    while not r.done():
        rows.append(tuple(r.value(t) for t in types))
    return rows


def rbwnat_header(names, types):
    return varint(len(names)) + b"".join(encode("String", n) for n in names) + b"".join(
        encode("String", t) for t in types)


# The column types the loader's tables use.
COLUMNS = [
    ("event_id", "String"),
    ("tenant", "LowCardinality(String)"),
    ("partition", "Int32"),
    ("offset", "Int64"),
    ("seq", "UInt64"),
    ("flag", "UInt8"),
    ("maybe", "Nullable(Int64)"),
    ("maybe_at", "Nullable(DateTime('UTC'))"),
    ("at", "DateTime('UTC')"),
    ("tags", "Array(String)"),
    ("nums", "Array(Int64)"),
]
NAMES = [c for c, _ in COLUMNS]
TYPES = [t for _, t in COLUMNS]
ROWS = [
    ("e1", "acme", 0, -9_000_000_000, 2**64 - 1, 1, None, None, 1772460300, [], []),
    ("e2\t'q\"", "acme", 7, 0, 0, 0, -5, 1772460301, 0, ["a", "b\nc", "ü"], [-1, 2**62]),
    ("e3", "globex", -2, 2**63 - 1, 42, 255, 2**63 - 1, 4102444800, 4102444799, [""], [0]),
]


def rowbinary(rows):
    return b"".join(encode(t, v) for row in rows for t, v in zip(TYPES, row))


def create_events(server, db, table="events", settings=""):
    cols = ", ".join(f"`{n}` {t}" for n, t in COLUMNS)
    server.ok(f"CREATE TABLE {db}.{table} ({cols}) ENGINE = MergeTree ORDER BY (tenant, event_id) {settings}")


def count(server, db, table):
    return int(server.ok(f"SELECT count() FROM {db}.{table}"))


# --- tests ------------------------------------------------------------------------------


def test_ping_and_root(server):
    assert server.request("GET", "/ping")[2] == b"Ok.\n"
    assert server.request("POST", "/ping", b"")[2] == b"Ok.\n"
    status, _, body = server.request("GET", "/")
    assert (status, body) == (200, b"Ok.\n")
    status, _, body = server.request("GET", "/no/such/handler")
    assert status == 404


def test_version_is_the_current_engine(server):
    # Sink::connect: `SELECT version()` with fetch_one::<String>() and validation off.
    status, h, body = server.query("SELECT version()", default_format="RowBinary")
    assert status == 200
    version = read_rowbinary(body, ["String"])[0][0]
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", version)
    assert tuple(map(int, version.split(".")[:2])) >= (24, 1), version
    # Plain text when no format is named, as from the server.
    assert server.request("GET", "/?query=SELECT%20version()")[2] == version.encode() + b"\n"


def test_ddl_and_rowbinary_round_trip(server, db):
    create_events(server, db)
    # Two LZ4 blocks (one per HTTP chunk), as a large insert sends them.
    data = rowbinary(ROWS)
    status, h, body = server.insert("events", NAMES, data, database=db, chunk=len(data) // 2 + 1)
    assert status == 200, body
    assert json.loads(h["x-clickhouse-summary"])["written_rows"] == "3"
    fields = ",".join(f"`{n}`" for n in NAMES)  # the crate's `?fields`
    # fetch_all with validation: RowBinaryWithNamesAndTypes, answered as lz4 frames.
    status, h, body = server.query(f"SELECT {fields} FROM events ORDER BY event_id", database=db,
                                   default_format="RowBinaryWithNamesAndTypes")
    assert status == 200 and h.get("content-encoding") == "lz4"
    names, types, rows = read_rbwnat(body)
    assert names == NAMES
    assert types == TYPES
    assert rows == ROWS
    # fetch_all without validation: RowBinary.
    status, _, body = server.query(f"SELECT {fields} FROM events ORDER BY event_id", database=db,
                                   default_format="RowBinary", accept_lz4=False)
    assert status == 200
    assert read_rowbinary(body, TYPES) == ROWS
    # Uncompressed insert (Compression::None) too; and text formats for humans.
    status, _, body = server.insert("events", ["event_id", "tenant"], rowbinary_two("e4", "initech"),
                                    database=db, compress=False)
    assert status == 200, body
    assert server.ok(f"SELECT event_id, tenant, tags FROM {db}.events WHERE event_id = 'e4' FORMAT TSV") \
        == b"e4\tinitech\t[]\n"
    assert server.ok(f"SELECT count() FROM {db}.events") == b"4\n"


def rowbinary_two(event_id, tenant):
    return encode("String", event_id) + encode("String", tenant)


def test_validation_describe_and_rbwnat_insert(server, db):
    create_events(server, db)
    # lib.rs insert_metadata_query: `DESCRIBE TABLE `t`` with describe_include_subcolumns=0,
    # fetched as RowBinaryWithNamesAndTypes into 7 String fields.
    status, _, body = server.query("DESCRIBE TABLE `events`", database=db,
                                   default_format="RowBinaryWithNamesAndTypes",
                                   settings={"describe_include_subcolumns": "0"})
    assert status == 200, body
    names, types, rows = read_rbwnat(body)
    assert names == ["name", "type", "default_type", "default_expression", "comment",
                     "codec_expression", "ttl_expression"]
    assert types == ["String"] * 7
    assert [(r[0], r[1]) for r in rows] == COLUMNS
    # insert.rs: `FORMAT RowBinaryWithNamesAndTypes`, the header first in the body.
    data = rbwnat_header(NAMES, TYPES) + rowbinary(ROWS)
    status, _, body = server.insert("events", NAMES, data, fmt="RowBinaryWithNamesAndTypes", database=db)
    assert status == 200, body
    assert count(server, db, "events") == 3
    # A header that does not match the table is refused.
    bad = rbwnat_header(["event_id"], ["Int64"]) + struct.pack("<q", 1)
    status, h, body = server.insert("events", ["event_id"], bad, fmt="RowBinaryWithNamesAndTypes", database=db)
    assert status != 200 and h["x-clickhouse-exception-code"] == re.match(rb"Code: (\d+)\.", body).group(1).decode()


def test_text_inserts_and_output_formats(server, db):
    server.ok(f"CREATE TABLE {db}.t (a Int64, s String, at DateTime('UTC')) ENGINE = MergeTree ORDER BY a")
    server.ok(f"INSERT INTO {db}.t VALUES (1, 'v\\'1', '2026-03-02 14:05:00'),\n(2, concat('v', '2'), 0)")
    server.ok(f'INSERT INTO {db}.t FORMAT JSONEachRow\n{{"a": 3, "s": "j", "at": "2026-03-02T14:05:00Z"}}\n'
              '{"a": 4, "s": "k\\n", "at": 1772460300}\n')
    server.ok(f"INSERT INTO {db}.t (a, s) -- a comment\nFORMAT TSV\n5\tt\n6\tu\n")
    # The query in the URL, the data in the body (curl --data-binary @file style).
    status, _, body = server.request(
        "POST", "/?" + urllib.parse.urlencode({"query": f"INSERT INTO {db}.t (a, s) FORMAT CSV"}), b"7,c\n8,d\n")
    assert status == 200, body
    # Binary data whose first byte is '\r' and that holds '\n' bytes reaches the engine intact.
    status, _, body = server.insert("t", ["a", "s"], struct.pack("<q", 0x0A0D) + encode("String", "\n\r"),
                                    database=db)
    assert status == 200, body
    assert server.ok(f"SELECT count(), sum(a) FROM {db}.t") == b"9\t%d\n" % (36 + 0x0A0D)
    assert server.ok(f"SELECT a, s FROM {db}.t WHERE a = 1") == b"1\tv\\'1\n"  # TabSeparated by default
    assert json.loads(server.ok(f"SELECT a, s FROM {db}.t WHERE a < 3 ORDER BY a FORMAT JSON"))["data"] == [
        {"a": 1, "s": "v'1"}, {"a": 2, "s": "v2"}]
    assert json.loads(server.ok(f"SELECT a FROM {db}.t WHERE a = 3 FORMAT JSONCompact"))["data"] == [[3]]
    assert server.ok(f"SELECT a, s FROM {db}.t WHERE a = 4 FORMAT JSONEachRow") == b'{"a":4,"s":"k\\n"}\n'
    assert server.ok(f"SELECT a FROM {db}.t WHERE a = 5", default_format="JSONEachRow") == b'{"a":5}\n'
    assert b"\xe2\x94" in server.ok(f"SELECT a FROM {db}.t WHERE a = 5 FORMAT Pretty")  # box drawing
    assert server.ok(f"SELECT toString(at) FROM {db}.t WHERE a = 3") == b"2026-03-02 14:05:00\n"


def test_settings_in_the_url_apply_to_that_request_only(server, db):
    sql = "SELECT toUInt64(18446744073709551615) AS big FORMAT JSONEachRow"
    assert server.ok(sql, settings={"output_format_json_quote_64bit_integers": "1"}) == b'{"big":"18446744073709551615"}\n'
    assert server.ok(sql, settings={"output_format_json_quote_64bit_integers": "0"}) == b'{"big":18446744073709551615}\n'
    got = server.ok("SELECT getSetting('max_execution_time'), getSetting('max_block_size'), currentDatabase()",
                    database=db, settings={"max_execution_time": "7", "max_block_size": "1234"})
    assert got == f"7\t1234\t{db}\n".encode()
    # … and nothing carries over to the next request.
    got = server.ok("SELECT getSetting('max_execution_time'), getSetting('max_block_size'), currentDatabase()")
    assert got == b"0\t65409\tdefault\n"
    # Settings reach inserts: unknown JSON keys refused (117) or skipped.
    server.ok(f"CREATE TABLE {db}.j (a Int64) ENGINE = MergeTree ORDER BY a")
    body = b'{"a": 1, "extra": 2}\n'
    q = {"query": f"INSERT INTO {db}.j FORMAT JSONEachRow"}
    status, h, out = server.request("POST", "/?" + urllib.parse.urlencode({**q, "input_format_skip_unknown_fields": "0"}), body)
    assert (status, h["x-clickhouse-exception-code"]) == (400, "117"), out
    status, _, out = server.request("POST", "/?" + urllib.parse.urlencode({**q, "input_format_skip_unknown_fields": "1"}), body)
    assert status == 200, out
    # An unknown setting is the server's 404 / code 115; user and password are ignored.
    status, h, out = server.query("SELECT 1", settings={"no_such_setting": "1"})
    assert (status, h["x-clickhouse-exception-code"]) == (404, "115")
    assert server.ok("SELECT 1", settings={"user": "someone", "password": "secret", "query_id": "q-1",
                                           "session_id": "s", "wait_end_of_query": "1"}) == b"1\n"


def test_query_parameters_in_url_and_multipart(server):
    status, _, body = server.request("POST", "/?param_x=41&param_s=a%27b", b"SELECT {x:Int32} + 1, {s:String}")
    assert (status, body) == (200, b"42\ta\\'b\n")  # TSV escapes the quote
    # query.rs multipart_query_body: the query and the param_* fields as form-data.
    boundary = "clickhouse-rs-boundary-abc"
    parts = [("query", "SELECT {n:UInt8} * 2"), ("param_n", "21")]
    form = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n" for k, v in parts)
    form += f"--{boundary}--\r\n"
    status, _, body = server.request("POST", "/", form.encode(),
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert (status, body) == (200, b"42\n")


def test_client_side_bound_values(server, db):
    # Sink::planned_last: the crate binds `?` client side (sql/escape.rs: \\ \' \` \t \n).
    server.ok(f"CREATE TABLE {db}.loader_blocks (consumer_group String, topic String, partition Int32, "
              "first_offset Int64, last_offset Int64, recorded_at UInt32) "
              "ENGINE = ReplacingMergeTree(recorded_at) ORDER BY (consumer_group, topic, partition, first_offset)")
    row = encode("String", "g'1\\") + encode("String", "webhooks.normalized") + struct.pack("<iqqI", 2, 10, 19, 1)
    assert server.insert("loader_blocks", ["consumer_group", "topic", "partition", "first_offset",
                                           "last_offset", "recorded_at"], row, database=db)[0] == 200
    sql = ("SELECT last_offset FROM loader_blocks FINAL WHERE consumer_group = 'g\\'1\\\\' AND "
           "topic = 'webhooks.normalized' AND partition = 2 AND first_offset = 10 LIMIT 1")
    status, _, body = server.query(sql, database=db, default_format="RowBinary")
    assert (status, read_rowbinary(body, ["Int64"])) == (200, [(19,)])
    status, _, body = server.query(sql.replace("= 10", "= 11"), database=db, default_format="RowBinary")
    assert (status, body) == (200, b"")  # fetch_optional → None


@pytest.mark.parametrize("async_insert", [None, "0"], ids=["default-settings", "async_insert=0"])
def test_insert_deduplication_token(server, db, async_insert):
    # Sink::connect: ALTER … MODIFY SETTING non_replicated_deduplication_window, then every
    # insert carries `insert_deduplication_token` (insert.with_setting). (chdb runs inserts
    # synchronously whatever async_insert says; both forms must be accepted.)
    create_events(server, db)
    server.ok(f"ALTER TABLE {db}.events MODIFY SETTING non_replicated_deduplication_window = 10000")
    extra = {} if async_insert is None else {"async_insert": async_insert}
    data = rowbinary(ROWS)

    def insert(token):
        status, _, body = server.insert("events", NAMES, data, database=db,
                                        settings={**extra, "insert_deduplication_token": token})
        assert status == 200, body

    insert("block-1/events")
    assert count(server, db, "events") == 3
    insert("block-1/events")  # a redone block: same token, nothing added
    assert count(server, db, "events") == 3
    insert("block-2/events")  # the same rows under another token are another block
    assert count(server, db, "events") == 6
    insert("block-1/events")
    assert count(server, db, "events") == 6
    # Without the window the token deduplicates nothing (plain MergeTree default is 0).
    create_events(server, db, "plain")
    for _ in range(2):
        status, _, body = server.insert("plain", NAMES, data, database=db,
                                        settings={**extra, "insert_deduplication_token": "block-1/plain"})
        assert status == 200, body
    assert count(server, db, "plain") == 6


def error_of(status, headers, body):
    code = headers.get("x-clickhouse-exception-code")
    m = re.match(rb"Code: (\d+)\. DB::Exception: ", body)  # what sink.rs error_code reads
    assert m, body
    assert code == m.group(1).decode(), (code, body)
    assert re.search(rb"\([A-Z0-9_]+\) \(version \d+\.\d+[\d.]* \(official build\)\)\n$", body), body
    return status, int(code)


def test_errors_like_the_server(server, db):
    server.ok(f"CREATE TABLE {db}.checked (a Int32, ok UInt8 MATERIALIZED throwIf(a < 0, 'negative a')) "
              "ENGINE = MergeTree ORDER BY a")
    # Unknown table: insert (crate shape) and select.
    status, h, body = server.insert("nosuch", ["a"], struct.pack("<i", 1), database=db)
    assert error_of(status, h, body) == (404, 60) and b"(UNKNOWN_TABLE)" in body
    assert error_of(*server.query("SELECT * FROM nosuch", database=db)) == (404, 60)
    assert error_of(*server.query("SELECT 1", database="no_such_db")) == (404, 81)
    status, h, body = server.query("SELEC 1")
    assert error_of(status, h, body) == (400, 62) and b"(SYNTAX_ERROR)" in body
    assert error_of(*server.query("SELECT 1; SELECT 2")) == (400, 62)
    assert error_of(*server.query("")) == (400, 62)
    # A value the server refuses: throwIf in a MATERIALIZED column (the loader's bad data).
    status, h, body = server.insert("checked", ["a"], struct.pack("<ii", 5, -1), database=db)
    assert error_of(status, h, body) == (500, 395) and b"negative a" in body
    assert count(server, db, "checked") == 0
    assert error_of(*server.insert("checked", ["a"], struct.pack("<ii", 5, -1), database=db,
                                   settings={"async_insert": "0"})) == (500, 395)
    # Rows of another shape; text that does not parse.
    assert error_of(*server.insert("checked", ["a"], b"\x01\x02", database=db)) == (500, 33)
    status, h, body = server.request(
        "POST", "/?" + urllib.parse.urlencode({"query": f"INSERT INTO {db}.checked FORMAT JSONEachRow"}),
        b'{"a": "x"}\n')
    assert error_of(status, h, body) == (400, 27)
    assert b"chdb-server" not in body  # the fixture's own file names stay out of messages
    status, h, body = server.query("SELECT sleepEachRow(0.25) FROM numbers(4)", settings={"max_execution_time": "0.3"})
    assert error_of(status, h, body) == (408, 159)
    # A GET runs read-only, as on the server.
    status, h, body = server.request("GET", "/?" + urllib.parse.urlencode({"query": f"DROP TABLE {db}.checked"}))
    assert error_of(status, h, body) == (500, 164)


def test_compression(server, db):
    # compress=1: the answer in native LZ4 blocks whose checksums hold.
    status, _, body = server.request("POST", "/?compress=1", b"SELECT number FROM numbers(3)")
    assert status == 200
    out, i = b"", 0
    while i < len(body):
        method, comp_size, raw_size = struct.unpack_from("<BII", body, i + 16)
        block = body[i + 16:i + 16 + comp_size]
        assert method == 0x82 and checksum(block) == body[i:i + 16]
        out += lz4.block.decompress(block[9:], uncompressed_size=raw_size)
        i += 16 + comp_size
    assert out == b"0\n1\n2\n"
    # enable_http_compression=0: plain even though lz4 is accepted.
    status, h, body = server.query("SELECT 1", settings={"enable_http_compression": "0"})
    assert (status, h.get("content-encoding"), body) == (200, None, b"1\n")
    status, h, body = server.request("POST", "/", b"SELECT 1", {"Accept-Encoding": "gzip"})
    assert h.get("content-encoding") == "gzip"
    # A corrupted block is refused with the server's code 40, and nothing is written.
    server.ok(f"CREATE TABLE {db}.c (a Int32) ENGINE = MergeTree ORDER BY a")
    block = bytearray(native_block(struct.pack("<i", 1)))
    block[3] ^= 0xFF
    status, h, body = server.request(
        "POST", "/?" + urllib.parse.urlencode({"database": db, "query": "INSERT INTO c FORMAT RowBinary",
                                               "decompress": "1"}), bytes(block))
    assert error_of(status, h, body) == (500, 40)
    assert count(server, db, "c") == 0


def test_keep_alive_and_chunked_bodies(server, db):
    server.ok(f"CREATE TABLE {db}.k (a Int32) ENGINE = MergeTree ORDER BY a")
    conn = server.connection()
    try:
        assert server.query("SELECT 1", conn=conn)[0] == 200
        sock = conn.sock
        for i in range(3):
            status, _, body = server.insert("k", ["a"], struct.pack("<ii", i, -i), database=db, conn=conn, chunk=4)
            assert status == 200, body
        assert server.query("SELECT * FROM nosuch", conn=conn)[0] == 404  # errors keep the connection
        assert server.query("SELECT count() FROM k", database=db, conn=conn)[2] == b"6\n"
        assert conn.sock is sock, "the connection was not kept alive"
    finally:
        conn.close()


def test_a_body_that_breaks_off_inserts_nothing(server, db):
    # The crate aborts an insert by failing the body stream: hyper closes the connection
    # before the last chunk. The server must not insert the part it got.
    server.ok(f"CREATE TABLE {db}.a (a Int32) ENGINE = MergeTree ORDER BY a")
    query = urllib.parse.urlencode({"database": db, "query": "INSERT INTO `a`(`a`) FORMAT RowBinary"})
    data = struct.pack("<ii", 1, 2)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(f"POST /?{query} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                  + b"%x\r\n" % len(data) + data + b"\r\n")
        time.sleep(0.2)
    time.sleep(0.3)
    assert count(server, db, "a") == 0


def test_concurrent_requests(server, db):
    server.ok(f"CREATE DATABASE {db}_b")
    try:
        for d in (db, f"{db}_b"):
            create_events(server, d)
            server.ok(f"ALTER TABLE {d}.events MODIFY SETTING non_replicated_deduplication_window = 1000")
        threads, inserts, errors = 8, 4, []

        def writer(t):
            conn = server.connection()
            database = db if t % 2 else f"{db}_b"
            try:
                for i in range(inserts):
                    rows = [(f"t{t}-i{i}-{r}", "acme", t, i, r, 0, None, None, 0, [], []) for r in range(25)]
                    status, _, body = server.insert("events", NAMES, rowbinary(rows), database=database, conn=conn,
                                                    settings={"insert_deduplication_token": f"t{t}/i{i}"})
                    if status != 200:
                        errors.append(body)
                    # Per-request state must not leak between concurrent requests.
                    got = server.ok("SELECT currentDatabase(), getSetting('max_block_size')", database=database,
                                    settings={"max_block_size": str(1000 + t)}, conn=conn)
                    if got != f"{database}\t{1000 + t}\n".encode():
                        errors.append(got)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
            finally:
                conn.close()

        workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert not errors, errors[:3]
        assert count(server, db, "events") + count(server, f"{db}_b", "events") == threads * inserts * 25
        assert count(server, db, "events") == threads // 2 * inserts * 25
    finally:
        server.ok(f"DROP DATABASE IF EXISTS {db}_b")


def test_restart_on_the_same_data_keeps_data(tmp_path):
    srv = ChdbServer(tmp_path / "data", tmp_path / "server.log")
    try:
        srv.ok("CREATE DATABASE keep")
        create_events(srv, "keep")
        assert srv.insert("events", NAMES, rowbinary(ROWS), database="keep")[0] == 200
        srv.stop(signal.SIGKILL)  # as `scripts/dev-services kill` and the fault tests do
        srv.start()
        assert count(srv, "keep", "events") == 3
        assert srv.insert("events", NAMES, rowbinary(ROWS[:1]), database="keep")[0] == 200
        assert srv.stop() == 0
        srv.start()
        assert count(srv, "keep", "events") == 4
    finally:
        if srv.proc.poll() is None:
            srv.stop(signal.SIGKILL)
