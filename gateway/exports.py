"""Exports of a filtered audit view as CSV or JSON, produced a batch at a time so memory stays flat.

CSV cells that a spreadsheet would run as a formula (starting with = + - @ tab or CR) get a leading apostrophe:
a holder's name, an operator's name or a detail comes from outside and must never become a formula on a lead's
laptop. The database does that work (and formats the times) in the export's SELECT, so Python only joins
lines (measured rates: docs/performance.md). JSON is data, not a spreadsheet: written as it is.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, String, case, func, literal, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import SQLCoreOperations

from gateway import audit
from gateway.audit_search import COLUMNS
from gateway.db.models import AuditEntry, Holder

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def neutralise(cell: str) -> str:
    """A text cell a spreadsheet will show as text, never evaluate (the rule the SQL below applies)."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


_FORMULA_CODES = [ord(c) for c in FORMULA_STARTS]


def _safe(column: SQLCoreOperations[Any], dialect: str) -> ColumnElement[Any]:
    """`neutralise` in SQL; NULL (no holder name) stays NULL, an empty cell. The first character is compared by
    its code (SQLite's unicode(), PostgreSQL's ascii()): no substring is built per cell."""
    text = type_coerce(column, String)
    first = func.ascii(text) if dialect == "postgresql" else func.unicode(text)
    return case((first.in_(_FORMULA_CODES), literal("'") + text), else_=text)


def _utc_text(dialect: str) -> ColumnElement[Any]:
    """The entry's time as ISO 8601 UTC text to the millisecond, e.g. 2024-07-26T19:30:00.000Z."""
    if dialect == "postgresql":
        return func.to_char(AuditEntry.at, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (gateway/db/rawsql.py): cut and joined, cheaper than strftime's parse.
    at = type_coerce(AuditEntry.at, String)
    return func.substr(at, 1, 10) + literal("T") + func.substr(at, 12, 12) + literal("Z")


def columns(fmt: str, dialect: str) -> list[SQLCoreOperations[Any]]:
    """The export's SELECT list, in COLUMNS order: seq first (the cursor), then text the writer can use as is."""
    a = AuditEntry
    text: list[SQLCoreOperations[Any]] = [
        a.kind,
        a.ref,
        a.gate,
        a.reader,
        a.badge_id,
        a.holder_id,
        Holder.family_name,
        Holder.given_name,
        a.operator,
    ]
    tail: list[SQLCoreOperations[Any]] = [a.reason, a.mode, a.detail]
    if fmt == "csv":
        decision = case((a.allow.is_(True), "allow"), (a.allow.is_(False), "deny"), else_="")
        # NULL (no holder name) as '': what the csv module writes for None, and a row of text joins in one go.
        safe = [func.coalesce(_safe(c, dialect), "") for c in text]
        return [a.seq, _utc_text(dialect), *safe, decision, *(func.coalesce(_safe(c, dialect), "") for c in tail)]
    if fmt == "json":
        return [a.seq, _utc_text(dialect), *text, a.allow, *tail]
    raise ValueError(f"unknown export format {fmt!r}")


_SEPARATORS = len(COLUMNS) - 2  # commas in a row's text after the seq, when no cell holds one


def csv_chunks(batches: Iterable[Sequence[Sequence[Any]]]) -> Iterator[str]:
    """The header line, then one chunk of lines per batch of rows selected with `columns("csv", ...)`.

    A row whose cells hold no comma, quote or line break needs no quoting: its line is the cells joined, which
    is what the csv module would write, at a quarter of the cost (nearly every row; measured in
    docs/performance.md). Any other row goes through the csv module."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    yield buffer.getvalue()
    for rows in batches:
        lines = []
        for row in rows:
            try:
                rest = ",".join(row[1:])
            except TypeError:  # a cell that is not text (None): the csv module writes it
                rest = '"'
            if rest.count(",") == _SEPARATORS and '"' not in rest and "\n" not in rest and "\r" not in rest:
                lines.append(f"{row[0]},{rest}\r\n")
            else:
                buffer.seek(0)
                buffer.truncate()
                writer.writerow(row)
                lines.append(buffer.getvalue())
        yield "".join(lines)


def json_chunks(batches: Iterable[Sequence[Sequence[Any]]]) -> Iterator[str]:
    """A JSON array of objects, one per row selected with `columns("json", ...)`, a batch at a time."""
    yield "["
    first = True
    encode = json.JSONEncoder(ensure_ascii=False).encode
    for rows in batches:
        if not rows:
            continue
        body = ",\n".join([encode(dict(zip(COLUMNS, row, strict=True))) for row in rows])
        yield ("\n" if first else ",\n") + body
        first = False
    yield "\n]\n"


def chunks(fmt: str, batches: Iterable[Sequence[Sequence[Any]]]) -> Iterator[str]:
    if fmt == "csv":
        return csv_chunks(batches)
    if fmt == "json":
        return json_chunks(batches)
    raise ValueError(f"unknown export format {fmt!r}")


def record(session: Session, operator: str, fmt: str, view: dict[str, str], now: dt.datetime) -> int:
    """Audit the export itself (kind "export", the filter as detail) before any row leaves; returns its seq."""
    detail = json.dumps({"format": fmt, "filter": view}, sort_keys=True, ensure_ascii=False)[:2000]
    return audit.record_action(session, "export", now, operator=operator[:64], detail=detail).seq
