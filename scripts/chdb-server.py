#!/usr/bin/env python3
"""A TEST FIXTURE, not a part of Switchboard: a current ClickHouse engine (chdb-core,
the ClickHouse 26.9 engine run in process) behind the part of ClickHouse's HTTP interface
that the loader, the Rust `clickhouse` crate (0.15) and the tests use.

Only ClickHouse 18.16 runs as a server on the development machines; this lets the
end-to-end tests reach the loader's code paths for current servers (row validation with
RowBinaryWithNamesAndTypes and DESCRIBE, `insert_deduplication_token`,
`non_replicated_deduplication_window`, `loader_blocks`).

    scripts/chdb-server.py --data DIR [--port 18124] [--host 127.0.0.1] [--serialize]

`scripts/dev-services up chdb` runs it. Each request is logged to stderr on one line:
method, status, milliseconds, the first 100 characters of its SQL.

Every statement is executed by the engine, so results, output formats, error codes and
messages are the engine's own. What the fixture supports:

- `GET|POST|HEAD /ping`, and `GET /` without a query, answer `Ok.`.
- The query in the `query` URL parameter and/or the body; as on the server, the text run
  is the parameter, a newline, then the body. For `INSERT … FORMAT F` and `INSERT …
  VALUES` the data (what follows the format name, by the server's rule: spaces, then one
  optional CR LF) goes to the engine as raw bytes, through a file and `INSERT … FROM
  INFILE … FORMAT F`, so every input format works, RowBinary and
  RowBinaryWithNamesAndTypes included, and every error of the insert is reported. Other
  statements run as they are; their output comes in the format named by `FORMAT`, else
  `default_format`, else TabSeparated, as raw bytes.
- `database` sets the current database. Every other URL parameter is a setting applied
  to that request only (`SET name = 'value'` on a connection of the request's own),
  except HTTPHandler's own parameters: `query`, `default_format`, `query_id`,
  `session_id`, `session_timeout`, `session_check`, `close_session`,
  `wait_end_of_query`, `compress`, `decompress`, `enable_http_compression`,
  `http_zlib_compression_level`, `user`, `password`, `quota_key`, `role`, `stacktrace`,
  `buffer_size`, `client_protocol_version`. `param_NAME` parameters fill `{NAME:Type}`
  placeholders (also as fields of a `multipart/form-data` body, the crate's form for
  `Query::param`). A GET runs with `readonly=2`, as on the server. User and password
  (parameters, `X-ClickHouse-User`/`X-ClickHouse-Key`, Basic auth) are accepted and
  ignored.
- Compression, with the PyPI packages `lz4` and `clickhouse-cityhash`: `decompress=1`
  bodies in ClickHouse's native block framing (16-byte CityHash128 checksum, checked;
  methods LZ4 0x82 and NONE 0x02), `compress=1` answers in that framing (LZ4), request
  bodies with `Content-Encoding` gzip, deflate or lz4, and answers in gzip, deflate or
  lz4 (frame format) when `Accept-Encoding` names one and `enable_http_compression` is
  not 0. Its default is 1 since ClickHouse 25.10, so the crate, which sends
  `Accept-Encoding: lz4`, gets lz4 frames, as from a current server. Error bodies are
  never compressed.
- Errors as the server sends them: status, header `X-ClickHouse-Exception-Code: N`, body
  `Code: N. DB::Exception: <engine's message>. (NAME) (version 26.9.x.y (official
  build))`. The status follows ClickHouse's src/Server/HTTP/exceptionCodeToHTTPStatus.cpp:
  400 for SYNTAX_ERROR, BAD_ARGUMENTS, CANNOT_PARSE_*, INCORRECT_DATA, TYPE_MISMATCH, …;
  404 for UNKNOWN_TABLE, UNKNOWN_DATABASE, UNKNOWN_SETTING, UNKNOWN_IDENTIFIER,
  UNKNOWN_FUNCTION, UNKNOWN_FORMAT, …; 408 TIMEOUT_EXCEEDED; 413 QUERY_IS_TOO_LARGE;
  501 NOT_IMPLEMENTED; 503 SOCKET_TIMEOUT, CANNOT_OPEN_FILE, CANNOT_SCHEDULE_TASK; 500
  for the rest (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO, VIOLATED_CONSTRAINT,
  CANNOT_READ_ALL_DATA, READONLY, …). An empty query and several statements in one
  request are refused with code 62, as by the server.
- Concurrency: each request runs on a connection of its own to the process's one
  embedded engine; chdb keeps the current database and settings per connection and runs
  the queries of different connections in parallel, so nothing leaks from one request
  to another. `--serialize` runs one request at a time instead.
- HTTP/1.1 keep-alive; `Content-Length` and chunked request bodies. A request whose body
  breaks off (a client aborting an insert) runs nothing.
- Data persists in `--data DIR`: the process can be SIGKILLed and started again on it.
  SIGTERM and SIGINT stop it cleanly. Insert data passes through files in
  `DIR.chdb-inserts` (next to DIR), each removed after its insert.

What it cannot do like a real server:
- Answers are sent whole once the query has finished (as with `wait_end_of_query=1`): no
  streaming, no progress headers, no exception written into a 200 answer already under
  way; results and insert bodies are held in memory.
- No sessions (`session_id` is ignored: `SET`, `USE` and temporary tables do not outlive
  the request), no users, passwords, roles, quotas or grants, no TLS, no native TCP
  protocol, no `/play`, `/dashboard`, `/replicas_status`, no external data tables in
  multipart bodies, no `KILL QUERY` by `query_id` (the id is only echoed back).
- No ZSTD (0x90) or other methods in `decompress=1` bodies (refused, code 89), and no
  zstd, br, xz, bz2 or snappy HTTP encodings (not offered / refused).
- `INSERT … FORMAT F SETTINGS …` (settings after the format name, an old syntax) is not
  split correctly: put SETTINGS before FORMAT or use URL parameters.
- A parse error in inserted data may word its position differently from the server's
  (the data is read from a file; the fixture strips the file name from the message).
- No asynchronous inserts: `async_insert` (1 by default since 26.2) is accepted, but
  chdb runs every insert synchronously, so inserts of concurrent clients are never
  flushed together into one part, and an insert never waits for a busy timeout.
- The engine is clickhouse-local's: one node, no Keeper, so no Replicated tables,
  ON CLUSTER or Distributed over nodes; no config.xml/users.xml (macros, named
  collections, profiles). clickhouse-local's `implicit_select=1` is switched off per
  request, as a server has it.
"""

import argparse
import gzip
import http.server
import itertools
import json
import os
import re
import shutil
import signal
import struct
import sys
import threading
import time
import urllib.parse
import uuid
import zlib

# The server under test runs in UTC (the development ClickHouse is configured so too).
os.environ["TZ"] = "UTC"
if hasattr(time, "tzset"):
    time.tzset()

try:
    import lz4.block
    import lz4.frame
except ImportError:  # pragma: no cover - requirements.txt installs it
    lz4 = None
try:
    from clickhouse_cityhash.cityhash import CityHash128
except ImportError:  # pragma: no cover - requirements.txt installs it
    CityHash128 = None

# Which URL parameters are not settings (HTTPHandler's own parameters).
NOT_SETTINGS = {
    "query", "database", "default_format", "query_id", "session_id", "session_timeout",
    "session_check", "close_session", "wait_end_of_query", "compress", "decompress",
    "enable_http_compression", "http_zlib_compression_level", "user", "password",
    "quota_key", "role", "stacktrace", "buffer_size", "client_protocol_version",
}

# src/Server/HTTP/exceptionCodeToHTTPStatus.cpp, by error name (codes come from the engine).
STATUS_BY_ERROR_NAME = {
    401: {"REQUIRED_PASSWORD"},
    403: {"UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE",
          "ACCESS_DENIED"},
    400: {"BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT",
          "CANNOT_PARSE_ESCAPE_SEQUENCE", "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE",
          "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
          "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6",
          "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN",
          "ILLEGAL_COLUMN", "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE",
          "THERE_IS_NO_COLUMN", "TOO_DEEP_AST", "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE",
          "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
          "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"},
    404: {"UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE",
          "UNKNOWN_STORAGE", "UNKNOWN_DATABASE", "UNKNOWN_SETTING",
          "UNKNOWN_DIRECTION_OF_SORTING", "UNKNOWN_AGGREGATE_FUNCTION", "UNKNOWN_FORMAT",
          "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE"},
    413: {"QUERY_IS_TOO_LARGE"},
    501: {"NOT_IMPLEMENTED"},
    503: {"SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"},
    411: {"HTTP_LENGTH_REQUIRED"},
    408: {"TIMEOUT_EXCEEDED"},
    415: {"UNSUPPORTED_MEDIA_TYPE"},
}
HTTP_STATUS_BY_NAME = {name: status for status, names in STATUS_BY_ERROR_NAME.items() for name in names}

# Codes the fixture raises itself (the same as the server's for the same failure).
SYNTAX_ERROR = (62, "SYNTAX_ERROR")
CHECKSUM_DOESNT_MATCH = (40, "CHECKSUM_DOESNT_MATCH")
UNKNOWN_COMPRESSION_METHOD = (89, "UNKNOWN_COMPRESSION_METHOD")
CANNOT_READ_ALL_DATA = (33, "CANNOT_READ_ALL_DATA")
CANNOT_DECOMPRESS = (271, "CANNOT_DECOMPRESS")
STD_EXCEPTION = (1001, "STD_EXCEPTION")

# Insert data passes through files in DIR.chdb-inserts, next to the data directory DIR.
SPOOL_SUFFIX = ".chdb-inserts"

CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "TabSeparatedWithNames": "text/tab-separated-values; charset=UTF-8",
    "TSVWithNames": "text/tab-separated-values; charset=UTF-8",
    "TabSeparatedWithNamesAndTypes": "text/tab-separated-values; charset=UTF-8",
    "TSVWithNamesAndTypes": "text/tab-separated-values; charset=UTF-8",
    "TabSeparatedRaw": "text/tab-separated-values; charset=UTF-8",
    "TSVRaw": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "JSONCompactEachRow": "application/x-ndjson; charset=UTF-8",
    "JSONStringsEachRow": "application/x-ndjson; charset=UTF-8",
    "RowBinary": "application/octet-stream",
    "RowBinaryWithNames": "application/octet-stream",
    "RowBinaryWithNamesAndTypes": "application/octet-stream",
    "Native": "application/octet-stream",
    "Parquet": "application/octet-stream",
    "Arrow": "application/octet-stream",
    "ArrowStream": "application/octet-stream",
}


class ClickHouseError(Exception):
    """An error as the server reports it: `Code: N. DB::Exception: … (NAME)`."""

    def __init__(self, code, name, text):
        super().__init__(text)
        self.code = code
        self.name = name
        self.text = text

    @classmethod
    def make(cls, code_name, message):
        code, name = code_name
        return cls(code, name, f"Code: {code}. DB::Exception: {message}. ({name})")

    @classmethod
    def from_engine(cls, exc):
        text = str(exc).strip()
        m = re.search(r"Code: (\d+)\.", text)
        if not m:
            return cls(STD_EXCEPTION[0], STD_EXCEPTION[1],
                       f"Code: {STD_EXCEPTION[0]}. DB::Exception: {text}. ({STD_EXCEPTION[1]})")
        text = text[m.start():]
        code = m.group(1)
        # Errors of `INSERT … FROM INFILE` come wrapped twice and name the file: unwrap.
        prefix = f"Code: {code}. DB::Exception: "
        while text.startswith(prefix + prefix):
            text = text[len(prefix):]
        text = re.sub(r"(\([A-Z0-9_]+\)) \(version [^)]*\)\. \([A-Z0-9_]+\)$", r"\1", text)
        text = re.sub(r": \(in file/uri [^)]*" + re.escape(SPOOL_SUFFIX) + r"/[^)]*\)", "", text)
        text = text.replace(": While executing File: data for INSERT was parsed from file", "")
        names = re.findall(r"\(([A-Z][A-Z0-9_]+)\)", text)
        return cls(int(code), names[-1] if names else "", text)


# --- SQL splitting ----------------------------------------------------------------------

_WS = " \t\n\r\f\v"


def _tokens(s, i=0):
    """Significant tokens of ClickHouse SQL from offset i: (kind, start, end). Kinds: word,
    string ('…'), ident ("…" or `…`), number, punct. Comments and whitespace are skipped."""
    n = len(s)
    while i < n:
        c = s[i]
        if c in _WS:
            i += 1
        elif s.startswith("--", i) or (c == "#" and (i + 1 == n or s[i + 1] in " !")):
            j = s.find("\n", i)
            i = n if j < 0 else j + 1
        elif s.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if s.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif s.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c in "'\"`":
            j = i + 1
            while j < n:
                if s[j] == "\\":
                    j += 2
                elif s[j] == c:
                    if j + 1 < n and s[j + 1] == c:
                        j += 2
                    else:
                        break
                else:
                    j += 1
            yield ("string" if c == "'" else "ident"), i, min(j + 1, n)
            i = j + 1
        elif c.isalpha() or c == "_" or ord(c) >= 0x80:
            j = i + 1
            while j < n and (s[j].isalnum() or s[j] in "_$" or ord(s[j]) >= 0x80):
                j += 1
            yield "word", i, j
            i = j
        elif c.isdigit():
            j = i + 1
            while j < n and (s[j].isalnum() or s[j] in "_."):
                j += 1
            yield "number", i, j
            i = j
        else:
            yield "punct", i, i + 1
            i += 1


def _unquote(s, kind, a, b):
    text = s[a:b]
    if kind == "ident":
        text = text[1:-1].replace("\\" + s[a], s[a]).replace(s[a] * 2, s[a])
    return text


class Insert:
    """An INSERT with data: the statement up to its SETTINGS clause (or to FORMAT/VALUES),
    that SETTINGS clause, the input format, and the offset in the request text where the
    data starts."""

    def __init__(self, head, settings, fmt, data_start):
        self.head, self.settings, self.fmt, self.data_start = head, settings, fmt, data_start


def split_insert(text):
    """If `text` (bytes) is `INSERT … FORMAT F <data>` or `INSERT … VALUES <data>`,
    returns an Insert; None for every other statement (INSERT … SELECT included)."""
    s = text[:1 << 20].decode("latin-1")  # one char per byte: offsets are byte offsets
    toks = _tokens(s)

    def is_word(t, *words):
        return t is not None and t[0] == "word" and s[t[1]:t[2]].upper() in words

    if not is_word(next(toks, None), "INSERT") or not is_word(next(toks, None), "INTO"):
        return None
    t = next(toks, None)  # the table, or TABLE, or FUNCTION
    if is_word(t, "TABLE", "FUNCTION"):
        next(toks, None)  # the table, or the function (its arguments are skipped below)
    t = next(toks, None)
    if t is not None and s[t[1]:t[2]] == ".":  # db . table
        next(toks, None)
        t = None
    depth, settings_at = 0, None
    for kind, a, b in itertools.chain([t] if t else [], toks):
        tok = s[a:b]
        if kind == "punct":
            if tok == "(":
                depth += 1
            elif tok == ")":
                depth -= 1
            continue
        if depth or kind != "word":
            continue
        word = tok.upper()
        head_end = a if settings_at is None else settings_at
        if word == "SETTINGS" and settings_at is None:
            settings_at = a
        elif word == "VALUES":
            following = next(_tokens(s, b), None)
            start = following[1] if following else len(text)
            return Insert(text[:head_end], text[head_end:a], "Values", start)
        elif word == "FORMAT":
            name = next(_tokens(s, b), None)
            if name is None or name[0] not in ("word", "ident"):
                return None
            fmt = _unquote(s, name[0], name[1], name[2])
            i = name[2]
            if i < len(text) and text[i:i + 1] == b";":
                raise ClickHouseError.make(
                    SYNTAX_ERROR,
                    "You have excessive ';' symbol before data for INSERT.\nExample:\n\n"
                    "INSERT INTO t (x, y) FORMAT TabSeparated\n;\tHello\n2\tWorld\n\n"
                    "Note that there is no ';' just after format name, you need to put at "
                    "least one whitespace symbol before the data")
            while i < len(text) and text[i:i + 1] in (b" ", b"\t", b"\f"):
                i += 1
            if text[i:i + 1] == b"\r":
                i += 1
            if text[i:i + 1] == b"\n":
                i += 1
            return Insert(text[:head_end], text[head_end:a], fmt, i)
        elif word in ("SELECT", "WITH", "WATCH", "FROM"):
            return None
    return None


def output_format_of(text, default):
    """The format a (non-INSERT) query's result comes in: its last top-level FORMAT."""
    s = text[:1 << 20].decode("latin-1")
    depth, fmt, prev_format = 0, default, False
    for kind, a, b in _tokens(s):
        tok = s[a:b]
        if prev_format and kind in ("word", "ident"):
            fmt = _unquote(s, kind, a, b)
        prev_format = False
        if kind == "punct":
            depth += {"(": 1, ")": -1}.get(tok, 0)
        elif kind == "word" and depth == 0 and tok.upper() == "FORMAT":
            prev_format = True
    return fmt


def sql_for_log(text, limit=100):
    head = text[:4 * limit].decode("utf-8", "replace")
    return " ".join(head.split())[:limit]


# --- compression ------------------------------------------------------------------------

LZ4_METHOD, NONE_METHOD, ZSTD_METHOD = 0x82, 0x02, 0x90


def _checksum(block):
    h = CityHash128(block)
    return struct.pack("<QQ", h >> 64, h & 0xFFFFFFFFFFFFFFFF)


def native_decompress(data):
    """Decodes a body in ClickHouse's compressed block framing (`decompress=1`)."""
    if lz4 is None or CityHash128 is None:
        raise ClickHouseError.make(UNKNOWN_COMPRESSION_METHOD,
                                   "This test fixture cannot decompress: install lz4 and clickhouse-cityhash")
    out, i, n = [], 0, len(data)
    while i < n:
        if n - i < 25:
            raise ClickHouseError.make(CANNOT_READ_ALL_DATA,
                                       f"Cannot read all data. Bytes read: {n - i}. Bytes expected: 25")
        method = data[i + 16]
        comp_size, raw_size = struct.unpack_from("<II", data, i + 17)
        block = data[i + 16:i + 16 + comp_size]
        if comp_size < 9 or len(block) < comp_size:
            raise ClickHouseError.make(
                CANNOT_READ_ALL_DATA,
                f"Cannot read all data. Bytes read: {len(block)}. Bytes expected: {comp_size}")
        expected = data[i:i + 16]
        actual = _checksum(block)
        if actual != expected:
            raise ClickHouseError.make(
                CHECKSUM_DOESNT_MATCH,
                f"Checksum doesn't match: corrupted data. Reference: {expected.hex()}. "
                f"Actual: {actual.hex()}. Size of compressed block: {comp_size}")
        payload = block[9:]
        if method == LZ4_METHOD:
            try:
                out.append(lz4.block.decompress(payload, uncompressed_size=raw_size))
            except lz4.block.LZ4BlockError as e:
                raise ClickHouseError.make(CANNOT_DECOMPRESS, f"Cannot decompress LZ4-encoded data: {e}") from None
        elif method == NONE_METHOD:
            out.append(payload)
        else:
            raise ClickHouseError.make(UNKNOWN_COMPRESSION_METHOD,
                                       f"Unknown compression method. Code: {method}"
                                       + (" (ZSTD is not supported by this test fixture)" if method == ZSTD_METHOD else ""))
        i += 16 + comp_size
    return b"".join(out)


def native_compress(data, block_size=1 << 20):
    """Encodes a response in ClickHouse's compressed block framing (`compress=1`), LZ4."""
    out = []
    for i in range(0, len(data), block_size):
        chunk = data[i:i + block_size]
        comp = lz4.block.compress(chunk, store_size=False)
        block = struct.pack("<BII", LZ4_METHOD, 9 + len(comp), len(chunk)) + comp
        out.append(_checksum(block) + block)
    return b"".join(out)


def decode_content_encoding(body, encoding):
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    try:
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
        if encoding == "lz4" and lz4 is not None:
            return lz4.frame.decompress(body)
    except Exception as e:  # noqa: BLE001 - reported as the server would
        raise ClickHouseError.make(CANNOT_DECOMPRESS, f"Cannot decompress {encoding} request body: {e}") from None
    raise ClickHouseError.make(UNKNOWN_COMPRESSION_METHOD,
                               f"Unknown HTTP Content-Encoding '{encoding}' (this test fixture supports gzip, deflate, lz4)")


def pick_response_encoding(accept):
    offered = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    for enc in ("gzip", "deflate", "lz4"):
        if enc in offered and (enc != "lz4" or lz4 is not None):
            return enc
    return None


def encode_response(body, encoding):
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=3)
    if encoding == "deflate":
        return zlib.compress(body, 3)
    if encoding == "lz4":
        return lz4.frame.compress(body, store_size=False)
    return body


def parse_multipart(body, content_type):
    """Fields of a multipart/form-data body (the crate sends `query` and `param_*` so)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        return {}
    boundary = b"--" + m.group(1).encode()
    fields = {}
    for part in body.split(boundary)[1:]:
        if part.startswith(b"--"):
            break
        part = part[2:] if part.startswith(b"\r\n") else part
        head, _, value = part.partition(b"\r\n\r\n")
        if value.endswith(b"\r\n"):
            value = value[:-2]
        nm = re.search(rb'name="([^"]*)"', head)
        if nm:
            fields[nm.group(1).decode()] = value
    return fields


# --- engine -----------------------------------------------------------------------------


class Engine:
    """The one embedded engine of this process. An anchor connection keeps it up; each
    request runs on a connection of its own, whose current database and settings are its
    own (chdb keeps them per connection)."""

    def __init__(self, path, serialize):
        from chdb import _chdb  # imported here: it starts nothing until connect()

        self._chdb = _chdb
        self.path = os.path.abspath(path)
        os.makedirs(self.path, exist_ok=True)
        self.anchor = _chdb.connect(self.path)
        self.version = self.anchor.query("SELECT version()", "TSV").bytes().decode().strip()
        # The engine's own table of error names, for the HTTP status of an error code.
        names = self.anchor.query("SELECT number, errorCodeToName(number) FROM numbers(10000) "
                                  "WHERE errorCodeToName(number) != ''", "TSV").bytes().decode()
        self.error_names = {int(code): name for code, name in (line.split("\t") for line in names.splitlines())}
        self.lock = threading.Lock() if serialize else None
        # Insert data is handed to the engine in files here (see Request._insert); what a
        # killed process left is removed.
        self.spool = self.path + SPOOL_SUFFIX
        shutil.rmtree(self.spool, ignore_errors=True)
        os.makedirs(self.spool)

    def connect(self):
        return self._chdb.connect(self.path)

    def close(self):
        if self.anchor is not None:
            self.anchor.close()
            self.anchor = None
        shutil.rmtree(self.spool, ignore_errors=True)


def quote_string(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(value):
    return "`" + value.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Request:
    """What one HTTP request asks the engine to do, and its answer."""

    def __init__(self, engine, method, params, text, query_params):
        self.engine = engine
        self.method = method
        self.params = params
        self.text = text
        self.query_params = query_params
        self.summary = {}
        self.log_sql = text

    def run(self):
        params = self.params
        text = self.text
        if not text.strip(b" \t\n\r\f\v;"):
            raise ClickHouseError.make(SYNTAX_ERROR, "Empty query")
        insert = split_insert(text)
        if insert is not None:
            self.log_sql = text[:insert.data_start]
        conn = self.engine.connect()
        try:
            conn.query("SET implicit_select = 0", "TSV")  # clickhouse-local's default is 1
            if params.get("database"):
                conn.query(f"USE {quote_ident(params['database'])}", "TSV")
            settings = {k: v for k, v in params.items() if k not in NOT_SETTINGS and not k.startswith("param_")}
            readonly = settings.pop("readonly", None)
            if self.method == "GET" and readonly in (None, "0"):
                readonly = "2"  # HTTPHandler: only read-only queries over GET
            for name, value in settings.items():
                conn.query(f"SET {name} = {quote_string(value)}", "TSV")
            if readonly is not None:  # last: it may forbid changing settings
                conn.query(f"SET readonly = {quote_string(readonly)}", "TSV")
            if insert is not None:
                return self._insert(conn, insert), None
            return self._query(conn)
        except RuntimeError as e:
            raise ClickHouseError.from_engine(e) from None
        finally:
            conn.close()

    def _insert(self, conn, insert):
        # The data goes to the engine as raw bytes through a file: `INSERT … FROM INFILE`
        # reports every error of the insert (chdb's send_insert() drops rows that fail in
        # the table's expressions without an error, and inline data in query() ends at
        # the first newline byte). See the notes at the top.
        head = insert.head.decode("utf-8", "replace").rstrip()
        settings = insert.settings.decode("utf-8", "replace").strip()
        fmt = insert.fmt if re.fullmatch(r"\w+", insert.fmt) else quote_ident(insert.fmt)
        path = os.path.join(self.engine.spool, f"{uuid.uuid4().hex}.data")
        try:
            with open(path, "wb") as f:
                f.write(memoryview(self.text)[insert.data_start:])
            # Newlines end any `--` comment at the end of the parts.
            sql = f"{head}\nFROM INFILE {quote_string(path)}\n{settings}\nFORMAT {fmt}"
            result = conn.query(sql, "TSV")
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.summary = {
            "read_rows": "0", "read_bytes": "0",
            "written_rows": str(result.rows_written()), "written_bytes": str(result.bytes_written()),
            "total_rows_to_read": "0", "result_rows": str(result.rows_written()),
            "result_bytes": str(result.bytes_written()),
            "elapsed_ns": str(int(result.elapsed() * 1e9)),
        }
        return b""

    def _query(self, conn):
        if hasattr(conn, "classify_query"):
            try:
                count = conn.classify_query(self.text.decode("utf-8", "replace")).get("statement_count", 1)
            except Exception:  # noqa: BLE001 - the engine reports what is wrong when it runs it
                count = 1
            if count > 1:
                raise ClickHouseError.make(
                    SYNTAX_ERROR,
                    "Syntax error (Multi-statements are not allowed): failed at position "
                    f"{self.text.find(b';') + 1} (end of query): "
                    f"{self.text[self.text.find(b';'):][:40].decode('utf-8', 'replace')}")
        fmt = self.params.get("default_format") or "TabSeparated"
        result = conn.query(self.text, fmt, params=self.query_params)
        body = result.bytes()
        self.summary = {
            "read_rows": str(result.rows_read()), "read_bytes": str(result.bytes_read()),
            "written_rows": "0", "written_bytes": "0",
            "total_rows_to_read": str(result.rows_read()), "result_rows": "0",
            "result_bytes": str(len(body)),
            "elapsed_ns": str(int(result.elapsed() * 1e9)),
        }
        return body, output_format_of(self.text, fmt)


# --- HTTP -------------------------------------------------------------------------------


class BodyError(Exception):
    """The request body could not be read whole: the connection is closed, nothing runs."""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse-chdb-fixture"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection is closed after this (hyper's pool: 2 s)
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed ACK

    def version_string(self):
        return self.server_version

    def log_message(self, format, *args):  # noqa: A002 - requests are logged by log_line instead
        pass

    def log_line(self, sql, status, started):
        ms = (time.monotonic() - started) * 1000
        sys.stderr.write(f"chdb-server: {self.command} {status} {ms:.0f}ms {sql}\n")
        sys.stderr.flush()

    # Reading the request ----------------------------------------------------------------

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                if not line.endswith(b"\n"):
                    raise BodyError("body broke off in a chunk header")
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise BodyError(f"bad chunk header {line[:40]!r}") from None
                if size == 0:
                    while True:  # trailers, up to the blank line
                        trailer = self.rfile.readline(65537)
                        if not trailer.endswith(b"\n"):
                            raise BodyError("body broke off in the trailers")
                        if trailer in (b"\r\n", b"\n"):
                            return b"".join(parts)
                chunk = self.rfile.read(size)
                if len(chunk) != size or self.rfile.read(2) != b"\r\n":
                    raise BodyError("body broke off in a chunk")
                parts.append(chunk)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        length = int(length)
        body = self.rfile.read(length)
        if len(body) != length:
            raise BodyError(f"body broke off after {len(body)} of {length} bytes")
        return body

    # Answering --------------------------------------------------------------------------

    def send(self, status, body, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Keep-Alive", f"timeout={self.timeout}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error_ch(self, err, query_id):
        text = err.text.rstrip()
        text = re.sub(r" \(version [0-9.]+[^)]*\)$", "", text)
        body = f"{text} (version {self.server.engine.version} (official build))\n".encode()
        status = HTTP_STATUS_BY_NAME.get(self.server.engine.error_names.get(err.code, err.name), 500)
        self.send(status, body, [
            ("Content-Type", "text/plain; charset=UTF-8"),
            ("X-ClickHouse-Server-Display-Name", "chdb-fixture"),
            ("X-ClickHouse-Query-Id", query_id),
            ("X-ClickHouse-Exception-Code", str(err.code)),
        ])
        return status

    def do_HEAD(self):
        self.handle_request()

    def do_GET(self):
        self.handle_request()

    def do_POST(self):
        self.handle_request()

    def handle_request(self):
        started = time.monotonic()
        url = urllib.parse.urlsplit(self.path)
        try:
            body = self.read_body()
        except (BodyError, ValueError, OSError) as e:
            self.close_connection = True
            self.log_line(f"(request body not read whole: {e}; nothing run)", "-", started)
            return
        path = url.path.rstrip("/") or "/"
        pairs = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
        params = dict(pairs)

        if path == "/ping" or (path == "/" and self.command in ("GET", "HEAD") and "query" not in params and not body):
            self.send(200, b"Ok.\n", [("Content-Type", "text/html; charset=UTF-8")])
            self.log_line("(ping)", 200, started)
            return
        if path != "/":
            msg = (f"There is no handle {url.path}\n\nUse / or /ping for health checks.\n\n"
                   "Send queries from your program with POST method or GET /?query=...\n").encode()
            self.send(404, msg, [("Content-Type", "text/plain; charset=UTF-8")])
            self.log_line(f"(no handle {url.path})", 404, started)
            return

        query_id = params.get("query_id") or str(uuid.uuid4())
        request = None
        try:
            request = self.make_request(params, body)
            if self.server.engine.lock is not None:
                with self.server.engine.lock:
                    out, fmt = request.run()
            else:
                out, fmt = request.run()
            out, headers = self.encode(params, out)
        except Exception as e:  # noqa: BLE001 - the client gets the server's error answer
            err = e if isinstance(e, ClickHouseError) else ClickHouseError.from_engine(e)
            status = self.send_error_ch(err, query_id)
            sql = request.log_sql if request else params.get("query", "").encode()
            self.log_line(sql_for_log(sql), status, started)
            return
        headers += [
            ("Content-Type", CONTENT_TYPES.get(fmt, "text/plain; charset=UTF-8")),
            ("X-ClickHouse-Server-Display-Name", "chdb-fixture"),
            ("X-ClickHouse-Query-Id", query_id),
            ("X-ClickHouse-Timezone", "UTC"),
            ("X-ClickHouse-Summary", json.dumps(request.summary, separators=(",", ":"))),
        ]
        if fmt:
            headers.append(("X-ClickHouse-Format", fmt))
        self.send(200, out, headers)
        self.log_line(sql_for_log(request.log_sql), 200, started)

    def make_request(self, params, body):
        """The SQL text and query parameters of a request, its body decoded."""
        encoding = self.headers.get("Content-Encoding", "")
        if encoding:
            body = decode_content_encoding(body, encoding)
        if params.get("decompress") in ("1", "true"):
            body = native_decompress(body)
        query_params = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            fields = parse_multipart(body, content_type)
            body = fields.pop("query", b"")
            for name, value in fields.items():
                if name.startswith("param_"):
                    query_params[name[6:]] = value.decode("utf-8", "replace")
        # As HTTPHandler does: the `query` parameter, a newline, then the body.
        url_query = params.get("query", "").encode()
        text = url_query + b"\n" + body if url_query else body
        return Request(self.server.engine, self.command, params, text, query_params)

    def encode(self, params, out):
        """The response body compressed as asked: `compress=1` (native blocks), or an
        HTTP Content-Encoding the client accepts (when enable_http_compression is on)."""
        if params.get("compress") in ("1", "true"):
            if lz4 is None or CityHash128 is None:
                raise ClickHouseError.make(UNKNOWN_COMPRESSION_METHOD,
                                           "This test fixture cannot compress: install lz4 and clickhouse-cityhash")
            return native_compress(out), []
        if params.get("enable_http_compression", "1") not in ("0", "false"):
            enc = pick_response_encoding(self.headers.get("Accept-Encoding", ""))
            if enc:
                return encode_response(out, enc), [("Content-Encoding", enc)]
        return out, []


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, engine):
        self.engine = engine
        super().__init__(address, Handler)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18124)
    ap.add_argument("--data", required=True, help="data directory (created if missing; kept across restarts)")
    ap.add_argument("--serialize", action="store_true", help="run one request at a time")
    args = ap.parse_args()

    engine = Engine(args.data, args.serialize)
    try:
        server = Server((args.host, args.port), engine)
    except OSError as e:
        engine.close()
        sys.exit(f"chdb-server: cannot listen on {args.host}:{args.port}: {e}")

    def stop(signum, _frame):
        sys.stderr.write(f"chdb-server: signal {signum}, shutting down\n")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"chdb-server: engine {engine.version} on http://{args.host}:{args.port}/ "
                     f"(data in {engine.path}, pid {os.getpid()})\n")
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        engine.close()
        sys.stderr.write("chdb-server: stopped\n")


if __name__ == "__main__":
    main()
