"""The audit: one append-only sequence of entries, each hashing its predecessor, committed before anything acts.

Decisions, gate events, desk and lead actions all go into `audit_entries`. The hash covers a canonical,
length-prefixed encoding of every field, so editing, deleting, inserting or reordering an entry breaks the
chain from there on. Appends are serialised per database (BEGIN IMMEDIATE on SQLite, a transaction-scoped
advisory lock on PostgreSQL) so several gateway workers still write one linear chain.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gateway.audit_hash import FIELDS, GENESIS, chain_hash
from gateway.db.models import AuditEntry
from gateway.db.rawsql import Query, Raw, placeholders

_CHAIN_LOCK = 0x41435321  # PostgreSQL advisory lock key of the audit chain ("ACS!")


@dataclass(frozen=True)
class Entry:
    kind: str
    at: dt.datetime
    recorded_at: dt.datetime
    ref: str | None = None
    reader: str = ""
    gate: str = ""
    badge_id: str = ""
    holder_id: str = ""
    operator: str = ""
    allow: bool | None = None
    reason: str = ""
    mode: str = ""
    detail: str = ""
    expires_ms: int | None = None


_FIELDS = [f.name for f in dataclasses.fields(Entry)]


def to_ms(t: dt.datetime) -> dt.datetime:
    """UTC, to the millisecond: what every database here stores exactly, so a stored entry hashes the same."""
    t = t.astimezone(dt.UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


# The hash is defined once, in gateway/audit_hash.py (verification runs it in worker processes).
if tuple(_FIELDS) != FIELDS:
    raise RuntimeError("audit.Entry and audit_hash.FIELDS list different fields")


def entry_hash(prev_hash: str, seq: int, entry: Entry) -> str:
    return chain_hash(prev_hash, seq, [getattr(entry, name) for name in _FIELDS])


HEAD: Query = ("SELECT seq, entry_hash FROM audit_entries ORDER BY seq DESC LIMIT 1", ())


def head_queries(raw: Raw) -> list[Query]:
    """The statements that lock the chain for this transaction and then read its last (seq, hash), in order: the
    head is the rows of the last one (`head_from`). The head must be read by a statement of its own, after the
    lock is held: a statement sees the database as it was when the statement began."""
    if raw.sqlite:  # SQLite's BEGIN IMMEDIATE already holds the only write lock
        return [HEAD]
    return [("SELECT pg_advisory_xact_lock(?)", (_CHAIN_LOCK,)), HEAD]


def head_from(rows: Sequence[tuple[Any, ...]]) -> tuple[int, str]:
    return (rows[0][0], rows[0][1]) if rows else (0, GENESIS)


def _head(raw: Raw) -> tuple[int, str]:
    """Lock the chain for this transaction and return its last (seq, hash)."""
    rows = [raw.rows(*query) for query in head_queries(raw)]  # in order: the lock, then the head
    return head_from(rows[-1])


def append(session: Session, entry: Entry) -> AuditEntry:
    """Add one entry at the head of the chain, inside the caller's transaction (the caller commits)."""
    session.flush()  # entries added earlier in this transaction come first (a raw read does not autoflush)
    seq, prev = _head(Raw.of(session))
    entry = dataclasses.replace(entry, at=to_ms(entry.at), recorded_at=to_ms(entry.recorded_at))
    row = AuditEntry(
        seq=seq + 1, prev_hash=prev, entry_hash=entry_hash(prev, seq + 1, entry), **dataclasses.asdict(entry)
    )
    session.add(row)
    session.flush()
    return row


def record_action(session: Session, kind: str, now: dt.datetime, **fields: object) -> AuditEntry:
    """An action by an operator or by the gateway itself, logged as it happens (it occurred when it was recorded)."""
    return append(session, Entry(kind=kind, at=now, recorded_at=now, **fields))  # type: ignore[arg-type]


_COLUMNS = ("seq", "prev_hash", "entry_hash", *_FIELDS)
_INSERT_HEAD = f"INSERT INTO audit_entries ({', '.join(_COLUMNS)}) VALUES "
_VALUES = f"({placeholders(3 + len(_FIELDS))})"
_AT, _RECORDED_AT = _FIELDS.index("at"), _FIELDS.index("recorded_at")


def append_many(db: Session | Raw, entries: list[Entry]) -> None:
    """Add entries in order (the caller commits)."""
    if not entries:
        return
    if isinstance(db, Session):
        db.flush()  # entries added through the ORM in this transaction come first
    raw = Raw.of(db)
    insert(raw, _head(raw), entries)


_ROWS_PER_INSERT = 500  # 500 x 17 values: well under SQLite's 32,766 variables per statement


def insert(raw: Raw, head: tuple[int, str], entries: Sequence[Entry]) -> None:
    """Put `entries` after `head`, which the caller read under the chain's lock, with multi-row INSERTs.
    One statement per batch rather than executemany: psycopg runs executemany through a pipeline, which costs
    more here than the round trip it saves."""
    rows = _chained_rows(raw, head, entries)
    for i in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[i : i + _ROWS_PER_INSERT]
        raw.rows(_INSERT_HEAD + ", ".join([_VALUES] * len(chunk)), [value for row in chunk for value in row])


_APPEND_AFTER = "SELECT head_seq, head_hash FROM audit_append(?, ?, ?::json)"  # migration 0007
_MOVES_TOLERATED = 20  # heads moved by other writers before one batch gives up (each move is one of their commits)


def append_after(raw: Raw, head: tuple[int, str], entries: Sequence[Entry]) -> None:
    """PostgreSQL, on an autocommitting connection (`rawsql.autocommitting`): put `entries` after `head`, read
    without the chain's lock, in one statement that locks the chain, inserts and commits. If another writer moved
    the head since it was read, the function inserts nothing and returns the head it found: the entries are hashed
    again after that one. The decision batch thus never waits for the lock while it decides."""
    for _ in range(_MOVES_TOLERATED):
        rows = _chained_rows(raw, head, entries)
        document = json.dumps([dict(zip(_COLUMNS, row, strict=True)) for row in rows], default=_iso)
        found = head_from(raw.rows(_APPEND_AFTER, (head[0], head[1], document)))
        if found == head:
            return
        head = found
    raise ChainBusy(f"the audit chain's head moved {_MOVES_TOLERATED} times while {len(entries)} entries waited")


class ChainBusy(DBAPIError):
    """Other writers kept moving the chain's head: the entries were not logged (a database error to callers)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, None, Exception(message))


def _iso(value: object) -> str:
    if isinstance(value, dt.datetime):  # naive UTC, as `Raw.time_in` gives it to PostgreSQL
        return value.isoformat()
    raise TypeError(f"not JSON: {value!r}")


def _chained_rows(raw: Raw, head: tuple[int, str], entries: Sequence[Entry]) -> list[tuple[Any, ...]]:
    seq, prev = head
    rows = []
    for entry in entries:
        seq += 1
        values = [getattr(entry, name) for name in _FIELDS]
        values[_AT] = to_ms(values[_AT])
        values[_RECORDED_AT] = to_ms(values[_RECORDED_AT])
        digest = chain_hash(prev, seq, values)
        values[_AT] = raw.time_in(values[_AT])
        values[_RECORDED_AT] = raw.time_in(values[_RECORDED_AT])
        rows.append((seq, prev, digest, *values))
        prev = digest
    return rows


def as_entry(row: AuditEntry) -> Entry:
    return Entry(**{name: getattr(row, name) for name in _FIELDS})
