"""The leads' search over the audit: one filter, keyset pages (by seq, newest first) and streamed batches.

A filter is built from query-string arguments (the web page, the JSON API and the exports share it) and turned
into SQL conditions. Paging never uses OFFSET: a page is "entries with seq below the cursor", which the (column,
seq) indexes of migration 0006 answer without sorting, however deep the page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, false, or_, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import SQLCoreOperations

from gateway.db.models import AuditEntry, Holder, Organisation
from gateway.site import Site

DECISIONS = ("allow", "deny")
MODES = ("online", "offline", "manual", "forced")
MAX_PAGE = 1000


class FilterError(ValueError):
    """A query argument that cannot be a filter; the message names it."""


@dataclass(frozen=True)
class Filter:
    """What a lead asks for; empty fields do not filter. Times are UTC; `until` is exclusive."""

    kind: str = ""  # decision, gate_event, export, ...: "" is every kind
    holder: str = ""  # a holder id, exactly
    name: str = ""  # part of a holder's family or given name
    badge: str = ""
    organisation: str = ""  # an organisation's code
    gate: str = ""
    zone: str = ""  # gates leading into this zone or one of its child zones
    decision: str = ""  # allow | deny
    reason: str = ""
    mode: str = ""  # online | offline | manual | forced
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, str], site: Site, **fixed: str) -> Filter:
        """From query arguments (unknown ones ignored); `fixed` values win over the arguments."""
        values = {f.name: (fixed.get(f.name, args.get(f.name, "")) or "").strip()[:120] for f in fields(cls)}
        if values["kind"] == "any":
            values["kind"] = ""
        if values["decision"] not in ("", *DECISIONS):
            raise FilterError(f"decision must be one of {', '.join(DECISIONS)}")
        if values["mode"] not in ("", *MODES):
            raise FilterError(f"mode must be one of {', '.join(MODES)}")
        if values["zone"] and values["zone"] not in site.zones:
            raise FilterError(f"zone {values['zone']!r} is not in the site")
        since, until = _time(values.pop("since"), "since"), _time(values.pop("until"), "until")
        if since and until and until <= since:
            raise FilterError("until must be later than since")
        return cls(**values, since=since, until=until)

    def as_args(self) -> dict[str, str]:
        """The non-empty fields as query arguments: to link to the next page or an export of the same view."""
        out: dict[str, str] = {}
        for key, value in asdict(self).items():
            if isinstance(value, dt.datetime):
                out[key] = value.strftime("%Y-%m-%dT%H:%M")
            elif value:
                out[key] = str(value)
        return out

    def view_args(self) -> dict[str, str]:
        """As `as_args`, saying "any" for every kind (the pages' own default kind may differ)."""
        return {**self.as_args(), "kind": self.kind or "any"}


def _time(text: str, name: str) -> dt.datetime | None:
    """ISO date or date-time; naive means UTC (the pages show UTC)."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(f"{name}: {text!r} is not an ISO date or date-time") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def zone_gates(site: Site, zone: str) -> list[str]:
    """Gates whose to-zone is `zone` or lies inside it (its child zones, at any depth)."""
    inside = {code for code in site.zones if code == zone or zone in site.ancestors(code)}
    return sorted(g.code for g in site.gates.values() if g.to_zone in inside)


def conditions(f: Filter, site: Site) -> list[ColumnElement[bool]]:
    a = AuditEntry
    where: list[ColumnElement[bool]] = []
    if f.kind:
        # With a holder, badge, gate or reason, their (column, seq) index is the one to walk: `kind || ''`
        # keeps SQLite's planner (which has no statistics) off the far less selective (kind, seq) index.
        selective = f.holder or f.badge or f.gate or f.reason
        where.append((a.kind + "" if selective else a.kind) == f.kind)
    if f.holder:
        where.append(a.holder_id == f.holder)
    if f.name:
        pattern = f"%{_escape_like(f.name.lower())}%"
        named = select(Holder.id).where(
            or_(Holder.family_name.ilike(pattern, escape="\\"), Holder.given_name.ilike(pattern, escape="\\"))
        )
        where.append(a.holder_id.in_(named))
    if f.badge:
        where.append(a.badge_id == f.badge)
    if f.organisation:
        members = select(Holder.id).join(Organisation).where(Organisation.code == f.organisation)
        where.append(a.holder_id.in_(members))
    if f.gate:
        where.append(a.gate == f.gate)
    if f.zone:
        gates = zone_gates(site, f.zone)
        where.append(a.gate.in_(gates) if gates else false())
    if f.decision:
        where.append(a.allow.is_(f.decision == "allow"))
    if f.reason:
        where.append(a.reason == f.reason)
    if f.mode:
        where.append(a.mode == f.mode)
    if f.since:
        where.append(a.at >= f.since)
    if f.until:
        where.append(a.at < f.until)
    return where


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# The columns a result row carries, in export order; the holder's name comes from a join (leads see names).
COLUMNS = (
    "seq",
    "at",
    "kind",
    "ref",
    "gate",
    "reader",
    "badge_id",
    "holder_id",
    "family_name",
    "given_name",
    "operator",
    "allow",
    "reason",
    "mode",
    "detail",
)


def page_columns() -> list[SQLCoreOperations[Any]]:
    """The columns of a page, typed (times as datetimes, the decision as a boolean), in COLUMNS order."""
    a = AuditEntry
    return [
        a.seq,
        a.at,
        a.kind,
        a.ref,
        a.gate,
        a.reader,
        a.badge_id,
        a.holder_id,
        Holder.family_name,
        Holder.given_name,
        a.operator,
        a.allow,
        a.reason,
        a.mode,
        a.detail,
    ]


def _select(f: Filter, site: Site, columns: Sequence[SQLCoreOperations[Any]] | None = None) -> Select[Any]:
    return (
        select(*(columns if columns is not None else page_columns()))
        .select_from(AuditEntry)
        .outerjoin(Holder, Holder.id == AuditEntry.holder_id)
        .where(*conditions(f, site))
        .order_by(_newest_first(f))
    )


def _newest_first(f: Filter) -> ColumnElement[Any]:
    """ORDER BY seq DESC; with a start time, `seq + 0` so that neither planner walks the seq index backwards
    from the newest entry hoping to meet the range soon (seq follows time, which the planners cannot know):
    reading the range through the time index and sorting it is bounded by the range's size."""
    return (AuditEntry.seq + 0).desc() if f.since is not None else AuditEntry.seq.desc()


@dataclass(frozen=True)
class Page:
    rows: Sequence[Row[Any]]
    next_cursor: int | None  # the seq to pass as `before` for the next (older) page; None on the last page


def search(session: Session, site: Site, f: Filter, before: int | None = None, limit: int = 50) -> Page:
    """One page of matching entries, newest first, all with seq < `before` when given."""
    limit = min(max(limit, 1), MAX_PAGE)
    query = _select(f, site)
    if before is not None:
        query = query.where(AuditEntry.seq < before)
    rows = session.execute(query.limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, rows[-1].seq if more and rows else None)


def batches(
    sessions: sessionmaker[Session],
    site: Site,
    f: Filter,
    size: int = 5000,
    columns: Sequence[SQLCoreOperations[Any]] | None = None,
    driver_rows: bool = False,
) -> Iterator[Sequence[Sequence[Any]]]:
    """Every matching entry, newest first, a keyset batch at a time: memory stays flat however many match.

    `columns` must start with the seq (the cursor). Each batch is read in its own short transaction: on SQLite
    a transaction takes the write lock (BEGIN IMMEDIATE), and a long export must never hold the decision
    writer off for its whole length. Rows come through SQLAlchemy Core, not the ORM: exports read millions.
    With `driver_rows` they are the driver's own tuples, without SQLAlchemy's result processing (10 µs a row,
    half an export's time): only for columns that need none, like the CSV export's, which are all text or the seq.
    """
    before: int | None = None
    while True:
        query = _select(f, site, columns)
        if before is not None:
            query = query.where(AuditEntry.seq < before)
        with sessions() as session:
            result = session.connection().execute(query.limit(size))
            rows: Sequence[Sequence[Any]] = result.cursor.fetchall() if driver_rows else result.all()
            result.close()
        if rows:
            yield rows
        if len(rows) < size:
            return
        before = rows[-1][0]
