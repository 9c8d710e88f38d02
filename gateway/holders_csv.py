"""Holders from a CSV file, one file per contingent: every row is checked before anything is written.

A file with a bad row imports nothing, unless the desk asks to import the good rows; either way the import is
one transaction (never half a file) with one audit entry. Each bad row is reported with its line number.

Columns (header row required, comma or semicolon separated, UTF-8):
    family_name, given_name, role              required
    country                                    ISO code; default: the organisation's country
    reference                                  the contingent's own number for the person (tells namesakes apart)
    qualifications                             kind[:last day[:reference]]; ...  e.g. airside_pass:2024-09-30:A-17
    zones, first_day, last_day                 the assignment: zone or badge codes, and its first and last day
    shifts                                     e.g. mon-fri 06:00-14:00; sat 10:00-18:00
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import audit
from gateway.db.models import Assignment, Holder, Organisation, Qualification, Shift
from gateway.holders import (
    Actor,
    AssignmentDraft,
    DeskError,
    HolderDraft,
    assignment_problems,
    holder_problems,
    new_id,
    parse_date,
    parse_qualifications,
    parse_shifts,
    parse_zones,
    window,
)
from gateway.site import Site

REQUIRED = ("family_name", "given_name", "role")
OPTIONAL = ("country", "reference", "qualifications", "zones", "first_day", "last_day", "shifts")
MAX_BYTES = 10 * 1024 * 1024
MAX_ROWS = 20_000
FLUSH_EVERY = 250

Progress = Callable[[str, int, int], None]  # stage ("checking" or "importing"), done, total


def _quiet(stage: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class RowProblem:
    line: int  # 1 is the header
    reason: str


@dataclass(frozen=True)
class GoodRow:
    line: int
    holder: HolderDraft
    assignment: AssignmentDraft | None


@dataclass
class CheckedFile:
    good: list[GoodRow] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)  # sorted by line

    @property
    def bad_lines(self) -> list[int]:
        return sorted({p.line for p in self.problems})

    @property
    def rows(self) -> int:
        return len(self.good) + len(self.bad_lines)


@dataclass(frozen=True)
class ImportResult:
    imported: int
    skipped_lines: list[int]
    holder_ids: list[str]


def _text(data: bytes) -> str:
    if len(data) > MAX_BYTES:
        raise DeskError(f"the file is {len(data) / 1e6:.1f} MB; at most {MAX_BYTES // 2**20} MB per file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DeskError(
            f"line {line}: the file is not UTF-8 text (byte {exc.start}); save it as 'CSV UTF-8' and try again"
        ) from None


def _reader(text: str) -> csv.DictReader[str]:
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        fieldnames = reader.fieldnames  # reads the first line, where a stray quote is a csv.Error too
    except csv.Error as exc:
        raise DeskError(f"line 1: the file is not valid CSV ({exc})") from None
    header = [h.strip().lower() for h in (fieldnames or [])]
    if not header:
        raise DeskError("line 1: the file is empty; the first line must name the columns")
    unknown = [h for h in header if h not in REQUIRED and h not in OPTIONAL]
    missing = [h for h in REQUIRED if h not in header]
    if unknown or missing or len(set(header)) != len(header):
        problems = []
        if missing:
            problems.append(f"missing column(s): {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s): {', '.join(unknown)} (known: {', '.join(REQUIRED + OPTIONAL)})")
        if len(set(header)) != len(header):
            problems.append("a column is named twice")
        raise DeskError(f"line 1: {'; '.join(problems)}")
    reader.fieldnames = header
    return reader


def check_file(
    data: bytes,
    site: Site,
    issuer: str,
    session: Session,
    organisation: Organisation | None,
    default_country: str,
    progress: Progress = _quiet,
) -> CheckedFile:
    """Read and check every row; nothing is written. A problem with the file itself raises DeskError."""
    text = _text(data)
    reader = _reader(text)
    total = max(text.count("\n") - 1, 1)  # lines, for progress only
    checked = CheckedFile()
    known_refs, known_names = _registered(session, organisation)
    seen_refs: dict[str, int] = {}
    seen_names: dict[tuple[str, str], int] = {}
    line = 1
    try:
        for row in reader:
            start, line = line + 1, reader.line_num
            if len(checked.good) + len(checked.problems) >= MAX_ROWS:
                raise DeskError(f"line {start}: more than {MAX_ROWS} rows; split the file")
            if None in row:
                checked.problems.append(RowProblem(start, f"{len(row[None])} cell(s) more than the header has"))
                continue
            cells = {k: (v or "").strip() for k, v in row.items()}
            if not any(cells.values()):
                continue  # a blank line
            problems, good = _check_row(start, cells, site, issuer, default_country)
            if good is not None:
                name = (good.holder.family_name.lower(), good.holder.given_name.lower())
                ref = good.holder.reference
                if ref and ref in seen_refs:
                    problems.append(f"reference {ref!r} is also on line {seen_refs[ref]}")
                elif ref and ref in known_refs:
                    problems.append(f"reference {ref!r} is already registered (holder {known_refs[ref]})")
                elif not ref and name in seen_names:
                    problems.append(f"same name as line {seen_names[name]}; add a reference column to tell them apart")
                elif not ref and name in known_names:
                    problems.append(
                        f"{good.holder.given_name} {good.holder.family_name} is already registered (holder "
                        f"{known_names[name]}); add a reference column to tell namesakes apart"
                    )
                if ref:
                    seen_refs.setdefault(ref, start)
                else:
                    seen_names.setdefault(name, start)
            if problems:
                checked.problems.extend(RowProblem(start, p) for p in problems)
            elif good is not None:
                checked.good.append(good)
            progress("checking", min(line, total), total)
    except csv.Error as exc:
        raise DeskError(f"line {reader.line_num}: the file is not valid CSV ({exc})") from None
    if not checked.good and not checked.problems:
        raise DeskError("the file has a header but no rows")
    progress("checking", total, total)
    return checked


def _registered(
    session: Session, organisation: Organisation | None
) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    if organisation is None or organisation.id is None:
        return {}, {}
    refs: dict[str, str] = {}
    names: dict[tuple[str, str], str] = {}
    rows = session.execute(
        select(Holder.id, Holder.reference, Holder.family_name, Holder.given_name).where(
            Holder.organisation_id == organisation.id
        )
    )
    for holder_id, reference, family, given in rows:
        if reference:
            refs[reference] = holder_id
        else:
            names[(family.lower(), given.lower())] = holder_id
    return refs, names


def _check_row(
    line: int, cells: dict[str, str], site: Site, issuer: str, default_country: str
) -> tuple[list[str], GoodRow | None]:
    qualifications, problems = parse_qualifications(cells.get("qualifications", ""))
    draft = HolderDraft(
        family_name=cells["family_name"],
        given_name=cells["given_name"],
        country=(cells.get("country") or default_country).upper(),
        role=cells["role"],
        reference=cells.get("reference", ""),
        qualifications=qualifications,
    )
    problems += holder_problems(draft, site)
    assignment = None
    if any(cells.get(k) for k in ("zones", "first_day", "last_day", "shifts")):
        zones, zone_problems = parse_zones(cells.get("zones", ""), site)
        shifts, shift_problems = parse_shifts(cells.get("shifts", ""))
        problems += zone_problems + shift_problems
        days = []
        for key in ("first_day", "last_day"):
            if not cells.get(key):
                problems.append(f"{key} is required with zones")
                continue
            day, problem = parse_date(cells[key], key)
            if problem:
                problems.append(problem)
            days.append(day)
        if not zones and not zone_problems:
            problems.append("zones is required with first_day and last_day")
        if not problems and len(days) == 2 and days[0] and days[1]:
            assignment = AssignmentDraft(zones, days[0], days[1], shifts)
            problems += assignment_problems(assignment, site, issuer)
    if problems:
        return problems, None
    return [], GoodRow(line, draft, assignment)


def import_checked(
    session: Session,
    site: Site,
    organisation: Organisation,
    checked: CheckedFile,
    now: dt.datetime,
    by: Actor,
    filename: str = "",
    good_rows_only: bool = False,
    progress: Progress = _quiet,
) -> ImportResult:
    """Write every good row in the caller's transaction, or nothing when the file has bad rows (unless asked)."""
    if checked.problems and not good_rows_only:
        raise DeskError(
            f"{len(checked.bad_lines)} row(s) have problems; nothing was imported. Fix them, or import the "
            f"{len(checked.good)} good row(s) only"
        )
    if not checked.good:
        raise DeskError("no row to import")
    ids: list[str] = []
    total = len(checked.good)
    for done, row in enumerate(checked.good, 1):
        holder = Holder(
            id=new_id(),
            organisation_id=organisation.id,
            family_name=row.holder.family_name,
            given_name=row.holder.given_name,
            country=row.holder.country,
            role=row.holder.role,
            reference=row.holder.reference,
            status="active",
            created_at=now,
        )
        session.add(holder)
        for q in row.holder.qualifications:
            expires = None
            if q.expires:
                expires = window(site, q.expires, q.expires)[1]
            holder.qualifications.append(Qualification(kind=q.kind, reference=q.reference, expires_at=expires))
        if row.assignment is not None:
            start, end = window(site, row.assignment.first_day, row.assignment.last_day)
            session.add(
                Assignment(
                    holder=holder,
                    zones=" ".join(row.assignment.zones),
                    valid_from=start,
                    valid_until=end,
                    changed_at=now,
                    shifts=[Shift(days=" ".join(s.days), starts=s.starts, ends=s.ends) for s in row.assignment.shifts],
                )
            )
        ids.append(holder.id)
        if done % FLUSH_EVERY == 0:
            session.flush()
            progress("importing", done, total)
    session.flush()
    progress("importing", total, total)
    skipped = checked.bad_lines
    left_out = f"; {len(skipped)} bad row(s) left out (lines {', '.join(map(str, skipped[:50]))})" if skipped else ""
    audit.record_action(
        session,
        "holders_imported",
        now,
        operator=by.name,
        detail=(f"{total} holder(s) into {organisation.code}" + (f" from {filename}" if filename else "") + left_out)[
            :2000
        ],
    )
    return ImportResult(total, skipped, ids)
