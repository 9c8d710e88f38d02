"""Walking the audit chain fast: ranges of a million-entry chain checked in parallel, straight off the driver.

Each entry's hash depends only on its own fields and the hash it names as its predecessor, so ranges of the
chain can be checked on their own, in separate processes (one per core), and then joined: a range is intact when
its entries are, and it joins the range before when its first entry names that range's last hash. Rows are read
with plain SQL that renders every field as the very text the hash covers (`audit_hash.text`), so no datetime,
bool or int is converted per entry in Python. Worker processes open the database with the driver alone and import
no SQLAlchemy, so they start in milliseconds. Small chains are walked in this process: below ~50,000 entries,
starting workers costs more than it saves.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway.audit_hash import FIELDS, GENESIS, NULL_TEXT, hash_encoded, hash_texts

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

PARALLEL_FROM = 50_000  # entries: below this, one process
_FETCH = 20_000
_NULL_BYTES = NULL_TEXT.encode()
_SQLITE_TIME = "substr({0}, 1, 10) || 'T' || substr({0}, 12, 12) || '+00:00'"  # stored 'YYYY-MM-DD HH:MM:SS.ffffff'
_POSTGRES_TIME = """to_char({0}, 'YYYY-MM-DD"T"HH24:MI:SS.MS"+00:00"')"""


def _field_text(field: str, dialect: str) -> str:
    """SQL for a field's text as the hash covers it. NULL stays NULL on PostgreSQL (its text cannot hold the NUL
    character that stands for it); the walk maps it."""
    sqlite = dialect == "sqlite"
    if field in ("at", "recorded_at"):
        return (_SQLITE_TIME if sqlite else _POSTGRES_TIME).format(field)
    if field == "allow":
        return f"CASE WHEN allow IS NULL THEN {'char(0)' if sqlite else 'NULL'} WHEN allow THEN '1' ELSE '0' END"
    return f"COALESCE(CAST({field} AS TEXT), char(0))" if sqlite else f"CAST({field} AS TEXT)"


def _select(dialect: str) -> str:
    """Rows seq, FIELDS' texts..., prev_hash, entry_hash for seq in [?, ?]."""
    columns = ", ".join(_field_text(f, dialect) for f in FIELDS)
    return (
        f"SELECT seq, {columns}, prev_hash, entry_hash FROM audit_entries WHERE seq >= {{p}} AND seq <= {{p}} "
        "ORDER BY seq"
    )


def _fetch(dbapi_connection: Any, dialect: str, first: int, last: int) -> Iterator[tuple[Any, ...]]:
    cur = dbapi_connection.cursor()
    try:
        cur.execute(_select(dialect).format(p="?" if dialect == "sqlite" else "%s"), (first, last))
        while chunk := cur.fetchmany(_FETCH):
            yield from chunk
    finally:
        cur.close()


def _connect(dialect: str, target: str) -> Any:
    """A driver connection in a worker process (a SQLite file path, or a PostgreSQL connection URI) that hands texts
    over as UTF-8 bytes: the hash wants bytes, so 16 texts a row are not decoded only to be encoded again."""
    if dialect == "sqlite":
        import sqlite3

        conn = sqlite3.connect(target)
        conn.text_factory = bytes
        return conn
    import psycopg

    pg = psycopg.connect(target)
    if pg.info.parameter_status("server_encoding") == "UTF8":
        # No conversion: the server sends its UTF-8 bytes as they are, and psycopg returns them as bytes.
        pg.execute("SET client_encoding TO 'SQL_ASCII'")
    return pg


def _rows(dialect: str, target: str, first: int, last: int) -> Iterator[tuple[Any, ...]]:
    """In a worker process: its own connection."""
    conn = _connect(dialect, target)
    try:
        yield from _fetch(conn, dialect, first, last)
    finally:
        conn.close()


Digest = Callable[[Any, int, Sequence[Any]], Any]  # (previous hash, seq, the fields' texts) -> this entry's hash


def _digest_encoded(prev: bytes, seq: int, fields: Sequence[bytes | None]) -> bytes:
    if None in fields:  # PostgreSQL's NULLs
        fields = [_NULL_BYTES if f is None else f for f in fields]
    return hash_encoded(prev, seq, fields)  # type: ignore[arg-type]


def _digest_texts(prev: str, seq: int, texts: Sequence[str | None]) -> str:
    if None in texts:  # PostgreSQL's NULLs
        texts = [NULL_TEXT if t is None else t for t in texts]
    return hash_texts(prev, str(seq), texts)  # type: ignore[arg-type]


def walk(
    rows: Iterable[Any],
    prev: Any,
    expected_seq: int,
    marks: Mapping[int, Any],
    digest: Digest = _digest_texts,
) -> tuple[int, str | None, int | None]:
    """Check links and hashes of rows (seq, FIELDS' texts..., prev_hash, entry_hash); returns (entries checked,
    problem, bad seq). With `prev` None the first row's link is taken as given (a range verified on its own: the
    caller checks where it joins the one before). Hashes are str, or ASCII bytes for `hash_encoded` rows."""
    count = 0
    width = len(FIELDS)
    for row in rows:
        seq = row[0]
        if seq != expected_seq:
            what = "missing" if seq > expected_seq else "out of order"
            return count, f"entry {expected_seq} is {what} (next entry found is {seq})", expected_seq
        if prev is None:
            prev = row[1 + width]
        if row[1 + width] != prev:
            return count, f"entry {seq} does not link to entry {seq - 1}", seq
        try:
            this = digest(prev, seq, row[1 : 1 + width])
        except ValueError:  # the hash it names is not hex (the first entry of a range is taken as given)
            return count, f"entry {seq} does not link to entry {seq - 1}", seq
        if this != row[2 + width]:
            return count, f"entry {seq} was altered (its hash does not match its content)", seq
        if seq in marks and marks[seq] != this:
            return count, f"entry {seq} differs from the signed checkpoint", seq
        prev, expected_seq, count = this, seq + 1, count + 1
    return count, None, None


def _check_range(
    rows: Iterable[tuple[Any, ...]], first: int, last: int, marks: Mapping[int, str], encoded: bool = False
) -> tuple[int, str | None, int | None, str, str]:
    """(entries checked, problem, bad seq, prev hash named by the first entry, hash of the last entry).
    `encoded`: the rows' texts are UTF-8 bytes, or NULL (see `_connect`)."""
    first_prev: Any = ""
    last_hash: Any = ""

    def watched(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        nonlocal first_prev, last_hash
        for row in rows:
            if not first_prev:
                first_prev = row[-2]
            last_hash = row[-1]
            yield row

    if encoded:
        ascii_marks = {s: h.encode() for s, h in marks.items()}
        count, problem, bad = walk(watched(rows), None, first, ascii_marks, _digest_encoded)
        first_prev, last_hash = (bytes(h).decode("ascii", "replace") for h in (first_prev, last_hash))
    else:
        count, problem, bad = walk(watched(rows), None, first, marks)
    if problem is None and first + count != last + 1:
        problem, bad = f"entry {first + count} is missing", first + count
    return count, problem, bad, first_prev, last_hash


def _check_range_at(job: tuple[str, str, int, int, dict[int, str]]) -> tuple[int, str | None, int | None, str, str]:
    dialect, target, first, last, marks = job
    rows = _rows(dialect, target, first, last)
    first_row = next(rows, None)
    encoded = first_row is None or isinstance(first_row[1], bytes)  # str if PostgreSQL's database is not UTF-8
    return _check_range(itertools.chain([first_row] if first_row else [], rows), first, last, marks, encoded)


def _target(session: Session) -> tuple[str, str]:
    """(dialect, what a worker connects to) for the session's database."""
    url = session.get_bind().engine.url
    if url.get_backend_name() == "sqlite":
        return "sqlite", str(url.database)
    return "postgresql", url.set(drivername="postgresql").render_as_string(hide_password=False)


def verify_ranges(session: Session, top: int, marks: Mapping[int, str]) -> tuple[int, str | None, int | None]:
    """Verify entries 1..top; returns (entries in order before the first problem, problem, bad seq)."""
    if top == 0:
        return 0, None, None
    parts = 1 if top < PARALLEL_FROM else (os.cpu_count() or 1)
    bounds = [(1 + top * i // parts, top * (i + 1) // parts) for i in range(parts)]
    if parts == 1:
        raw = session.connection()
        rows = _fetch(raw.connection.driver_connection, raw.dialect.name, 1, top)
        results = [_check_range(rows, 1, top, marks)]
    else:
        dialect, target = _target(session)
        jobs = [(dialect, target, a, b, {s: h for s, h in marks.items() if a <= s <= b}) for a, b in bounds]
        with mp.get_context("spawn").Pool(parts) as pool:
            results = pool.map(_check_range_at, jobs)
    checked = 0
    prev = GENESIS
    for (first, _last), (count, problem, bad, first_prev, last_hash) in zip(bounds, results, strict=True):
        if count and first_prev != prev:
            return checked, f"entry {first} does not link to entry {first - 1}", first
        if problem:
            return checked + count, problem, bad
        checked += count
        prev = last_hash
    return checked, None, None
