"""Walking the audit chain fast: ranges of a million-entry chain checked in parallel, straight off the driver.

Each entry's hash depends only on its own fields and the hash it names as its predecessor, so ranges of the
chain can be checked on their own, in separate processes (one per core), and then joined: a range is intact when
its entries are, and it joins the range before when its first entry names that range's last hash. Rows are read
with plain SQL that renders times in the very text the hash covers (`audit._text`), so no datetime is built per
entry. Small chains are walked in this process: starting workers costs more than it saves below ~50,000 entries.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from gateway.audit import FIELDS, GENESIS, chain_hash

PARALLEL_FROM = 50_000  # entries: below this, one process
_FETCH = 20_000


def _select(dialect: str) -> str:
    """Rows seq, FIELDS..., prev_hash, entry_hash for seq in [?, ?], times as the hash's text (ISO, ms, UTC)."""
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (SQLAlchemy's format)
        time = "substr({0}, 1, 10) || 'T' || substr({0}, 12, 12) || '+00:00'"
    else:
        time = """to_char({0}, 'YYYY-MM-DD"T"HH24:MI:SS.MS"+00:00"')"""
    columns = [time.format(f) if f in ("at", "recorded_at") else f for f in FIELDS]
    return (
        f"SELECT seq, {', '.join(columns)}, prev_hash, entry_hash FROM audit_entries "
        "WHERE seq >= {p} AND seq <= {p} ORDER BY seq"
    )


def _fetch(dbapi_connection: Any, dialect: str, first: int, last: int) -> Iterator[tuple[Any, ...]]:
    cur = dbapi_connection.cursor()
    try:
        cur.execute(_select(dialect).format(p="?" if dialect == "sqlite" else "%s"), (first, last))
        while chunk := cur.fetchmany(_FETCH):
            yield from chunk
    finally:
        cur.close()


def _rows(url: str, first: int, last: int) -> Iterator[tuple[Any, ...]]:
    """In a worker process: its own connection."""
    engine = create_engine(url)
    try:
        conn = engine.raw_connection()
        try:
            yield from _fetch(conn.driver_connection, engine.dialect.name, first, last)
        finally:
            conn.close()
    finally:
        engine.dispose()


def walk(
    rows: Iterable[Any], prev: str | None, expected_seq: int, marks: Mapping[int, str]
) -> tuple[int, str | None, int | None]:
    """Check links and hashes; returns (entries checked, problem, bad seq). With `prev` None the first row's
    link is taken as given (a range verified on its own: the caller checks where it joins the one before)."""
    count = 0
    width = len(FIELDS)
    for row in rows:
        seq = row[0]
        if seq != expected_seq:
            what = "missing" if seq > expected_seq else "out of order"
            return count, f"entry {expected_seq} is {what} (next entry found is {seq})", expected_seq
        values = row[1 : 1 + width]
        if prev is None:
            prev = row[1 + width]
        if row[1 + width] != prev:
            return count, f"entry {seq} does not link to entry {seq - 1}", seq
        digest = chain_hash(prev, seq, values)
        if digest != row[2 + width]:
            return count, f"entry {seq} was altered (its hash does not match its content)", seq
        if seq in marks and marks[seq] != digest:
            return count, f"entry {seq} differs from the signed checkpoint", seq
        prev, expected_seq, count = digest, seq + 1, count + 1
    return count, None, None


def _check_range(
    rows: Iterable[tuple[Any, ...]], first: int, last: int, marks: Mapping[int, str]
) -> tuple[int, str | None, int | None, str, str]:
    """(entries checked, problem, bad seq, prev hash named by the first entry, hash of the last entry)."""
    first_prev = ""
    last_hash = ""

    def watched(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        nonlocal first_prev, last_hash
        for row in rows:
            if not first_prev:
                first_prev = row[-2]
            last_hash = row[-1]
            yield row

    count, problem, bad = walk(watched(rows), None, first, marks)
    if problem is None and first + count != last + 1:
        problem, bad = f"entry {first + count} is missing", first + count
    return count, problem, bad, first_prev, last_hash


def _check_range_at(job: tuple[str, int, int, dict[int, str]]) -> tuple[int, str | None, int | None, str, str]:
    url, first, last, marks = job
    return _check_range(_rows(url, first, last), first, last, marks)


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
        url = session.get_bind().engine.url.render_as_string(hide_password=False)
        jobs = [(url, a, b, {s: h for s, h in marks.items() if a <= s <= b}) for a, b in bounds]
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
