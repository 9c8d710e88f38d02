"""Holders and their assignments: who guards the event, and where and when they may go.

Every input (a desk form, an API call, a CSV row, a command line) goes through the checks here, so a problem
reads the same wherever it was typed. Checks return problems as sentences; nothing is written while there are
any. Suspending and reinstating a holder are audited in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from gateway import audit, tokens
from gateway.countries import country_problem
from gateway.db.models import Assignment, Badge, Holder, Organisation, Qualification, Shift
from gateway.site import DAYS, Site, TimeWindow

ORGANISATION_KINDS = ("police", "gendarmerie", "military", "private_security", "civil_protection", "other")
STATUSES = ("active", "suspended")
NAME_MAX = 120
REFERENCE_MAX = 64
MAX_VALIDITY_DAYS = 400
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d\Z|^24:00\Z")


class DeskError(ValueError):
    """A desk operation was refused; `problems` says why, one sentence each."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Actor:
    """Who did it, for the audit: an operator of the web side or API, or a command-line user."""

    name: str
    operator_id: int | None = None


def new_id() -> str:
    """Opaque 48-bit ids (8 characters): short in the QR code, meaningless outside the gateway."""
    return secrets.token_urlsafe(6)


# --- drafts: what the desk typed, before it is checked -------------------------------------------------


@dataclass(frozen=True)
class QualificationDraft:
    kind: str  # a code from zones.yaml's qualifications
    expires: dt.date | None = None  # last valid day; None: does not expire
    reference: str = ""  # e.g. a licence number


@dataclass(frozen=True)
class HolderDraft:
    family_name: str
    given_name: str
    country: str
    role: str
    reference: str = ""  # the contingent's own number for this person
    qualifications: tuple[QualificationDraft, ...] = ()


@dataclass(frozen=True)
class ShiftDraft:
    days: tuple[str, ...]
    starts: str  # HH:MM, site-local
    ends: str  # HH:MM or 24:00


@dataclass(frozen=True)
class AssignmentDraft:
    zones: tuple[str, ...]  # zone codes
    first_day: dt.date  # site-local dates, both included
    last_day: dt.date
    shifts: tuple[ShiftDraft, ...] = ()


# --- parsing text (forms, CSV cells, command lines) ----------------------------------------------------


def parse_zones(text: str, site: Site) -> tuple[tuple[str, ...], list[str]]:
    """Zone codes or their badge codes, separated by spaces or commas -> zone codes (in site order)."""
    wanted: set[str] = set()
    problems = []
    for word in re.split(r"[\s,;]+", text.strip()):
        if not word:
            continue
        code = word if word in site.zones else site.zone_for_badge_code.get(word.upper())
        if code is None:
            problems.append(f"unknown zone {word!r}")
        else:
            wanted.add(code)
    return tuple(z for z in site.zones if z in wanted), problems


def parse_date(text: str, what: str) -> tuple[dt.date | None, str | None]:
    try:
        return dt.date.fromisoformat(text.strip()), None
    except ValueError:
        return None, f"{what} {text.strip()!r} is not a date (YYYY-MM-DD)"


def parse_qualifications(text: str) -> tuple[tuple[QualificationDraft, ...], list[str]]:
    """`kind[:last day[:reference]]` entries separated by ';', e.g. `firearm_authorisation:2024-09-30:PA-1234`."""
    found: list[QualificationDraft] = []
    problems: list[str] = []
    for entry in text.split(";"):
        if not entry.strip():
            continue
        kind, _, rest = entry.strip().partition(":")
        day_text, _, reference = rest.partition(":")
        expires = None
        if day_text.strip():
            expires, problem = parse_date(day_text, f"expiry of {kind.strip()}")
            if problem:
                problems.append(problem)
                continue
        found.append(QualificationDraft(kind.strip(), expires, reference.strip()))
    return tuple(found), problems


def format_qualifications(qualifications: Iterable[QualificationDraft]) -> str:
    parts = []
    for q in qualifications:
        parts.append(":".join([q.kind, q.expires.isoformat() if q.expires else "", q.reference]).rstrip(":"))
    return "; ".join(parts)


def _days(text: str) -> tuple[str, ...] | None:
    """`mon-fri`, `sat,sun`, `mon tue` or `daily` -> days in week order, or None."""
    text = text.strip().lower()
    if text in ("daily", "all", "mon-sun"):
        return DAYS
    days: set[str] = set()
    for part in re.split(r"[,\s]+", text):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            return None
        i, j = DAYS.index(first), DAYS.index(last or first)
        if j < i:
            return None
        days.update(DAYS[i : j + 1])
    return tuple(d for d in DAYS if d in days)


def parse_shifts(text: str) -> tuple[tuple[ShiftDraft, ...], list[str]]:
    """`DAYS HH:MM-HH:MM` entries separated by ';', e.g. `mon-fri 06:00-14:00; sat,sun 10:00-18:00`."""
    found: list[ShiftDraft] = []
    problems: list[str] = []
    for entry in text.split(";"):
        if not entry.strip():
            continue
        match = re.fullmatch(r"\s*(.+?)\s+(\d\d:\d\d)\s*-\s*(\d\d:\d\d)\s*", entry)
        days = _days(match.group(1)) if match else None
        if match is None or days is None:
            problems.append(f"shift {entry.strip()!r} is not like 'mon-fri 06:00-14:00'")
            continue
        found.append(ShiftDraft(days, match.group(2), match.group(3)))
    return tuple(found), problems


def format_shifts(shifts: Iterable[Shift | ShiftDraft]) -> str:
    return "; ".join(f"{_format_days(_shift_days(s))} {s.starts}-{s.ends}" for s in shifts)


def _shift_days(shift: Shift | ShiftDraft) -> tuple[str, ...]:
    return tuple(shift.days.split()) if isinstance(shift.days, str) else shift.days


def _format_days(days: Sequence[str]) -> str:
    idx = [DAYS.index(d) for d in days]
    if len(idx) > 2 and idx == list(range(idx[0], idx[-1] + 1)):
        return f"{days[0]}-{days[-1]}"
    return ",".join(days)


# --- checks ------------------------------------------------------------------------------------------


def _name_problem(value: str, what: str) -> str | None:
    if not value.strip():
        return f"{what} is required"
    if len(value) > NAME_MAX:
        return f"{what} is longer than {NAME_MAX} characters"
    if _CONTROL.search(value):
        return f"{what} contains a control character"
    return None


def holder_problems(draft: HolderDraft, site: Site) -> list[str]:
    problems = [
        p
        for p in (
            _name_problem(draft.family_name, "family name"),
            _name_problem(draft.given_name, "given name"),
            country_problem(draft.country),
        )
        if p
    ]
    if site.roles and draft.role not in site.roles:
        problems.append(f"unknown role {draft.role!r} (known: {', '.join(site.roles)})")
    elif not _CODE.match(draft.role):
        problems.append(f"role {draft.role!r} is not a code")
    if len(draft.reference) > REFERENCE_MAX or _CONTROL.search(draft.reference):
        problems.append(f"reference is longer than {REFERENCE_MAX} characters or holds a control character")
    kinds = [q.kind for q in draft.qualifications]
    for q in draft.qualifications:
        if site.qualifications and q.kind not in site.qualifications:
            problems.append(f"unknown qualification {q.kind!r} (known: {', '.join(site.qualifications)})")
        elif not _CODE.match(q.kind):
            problems.append(f"qualification {q.kind!r} is not a code")
        if len(q.reference) > 120:
            problems.append(f"reference of {q.kind} is longer than 120 characters")
    if len(set(kinds)) != len(kinds):
        problems.append("a qualification is listed twice")
    return problems


def assignment_problems(draft: AssignmentDraft, site: Site, issuer: str) -> list[str]:
    problems = []
    unknown = [z for z in draft.zones if z not in site.zones]
    if unknown:
        problems.append(f"unknown zone(s): {', '.join(unknown)}")
    elif not draft.zones:
        problems.append("at least one zone is needed")
    else:
        size = tokens.size_problem(issuer, [site.zones[z].on_badge for z in draft.zones])
        if size:
            problems.append(size)
    if draft.last_day < draft.first_day:
        problems.append("the last day is before the first day")
    elif (draft.last_day - draft.first_day).days >= MAX_VALIDITY_DAYS:
        problems.append(f"a badge is valid for at most {MAX_VALIDITY_DAYS} days")
    for s in draft.shifts:
        if not s.days or any(d not in DAYS for d in s.days):
            problems.append(f"shift days must be among {', '.join(DAYS)}")
        elif not _HHMM.match(s.starts) or s.starts == "24:00" or not _HHMM.match(s.ends):
            problems.append(f"shift times {s.starts}-{s.ends} are not HH:MM")
        elif s.ends <= s.starts:
            problems.append(f"shift {s.starts}-{s.ends} ends before it starts (split a night shift at midnight)")
    return problems


def window(site: Site, first_day: dt.date, last_day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """Site-local days, both included -> [start, end) in UTC."""
    tz = zoneinfo.ZoneInfo(site.timezone)
    start = dt.datetime.combine(first_day, dt.time(), tz)
    end = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), tz)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def local_days(site: Site, start: dt.datetime, end: dt.datetime) -> tuple[dt.date, dt.date]:
    """The inverse of `window`: the first and the last site-local day of [start, end)."""
    tz = zoneinfo.ZoneInfo(site.timezone)
    return start.astimezone(tz).date(), (end.astimezone(tz) - dt.timedelta(microseconds=1)).date()


# --- records -----------------------------------------------------------------------------------------


def organisation_problems(code: str, name: str, kind: str, country: str) -> list[str]:
    problems = []
    if not _CODE.match(code):
        problems.append(f"organisation code {code!r} is not a code (letters, digits, '_', '.', '-')")
    if p := _name_problem(name, "organisation name"):
        problems.append(p)
    if kind not in ORGANISATION_KINDS:
        problems.append(f"organisation kind {kind!r} is not one of {', '.join(ORGANISATION_KINDS)}")
    if p := country_problem(country):
        problems.append(p)
    return problems


def find_organisation(session: Session, code: str) -> Organisation | None:
    return session.scalar(select(Organisation).where(Organisation.code == code))


def create_organisation(session: Session, code: str, name: str, kind: str, country: str) -> Organisation:
    problems = organisation_problems(code, name, kind, country)
    if find_organisation(session, code) is not None:
        problems.append(f"organisation {code!r} exists already")
    if problems:
        raise DeskError(*problems)
    org = Organisation(code=code, name=name.strip(), kind=kind, country=country)
    session.add(org)
    session.flush()
    return org


def _qualification_rows(site: Site, drafts: Iterable[QualificationDraft]) -> list[Qualification]:
    tz = zoneinfo.ZoneInfo(site.timezone)
    return [
        Qualification(
            kind=q.kind,
            reference=q.reference,
            # valid through its last day, site time
            expires_at=dt.datetime.combine(q.expires + dt.timedelta(days=1), dt.time(), tz) if q.expires else None,
        )
        for q in drafts
    ]


def register(session: Session, site: Site, organisation: Organisation, draft: HolderDraft, now: dt.datetime) -> Holder:
    problems = holder_problems(draft, site)
    if problems:
        raise DeskError(*problems)
    holder = Holder(
        id=new_id(),
        organisation=organisation,
        family_name=draft.family_name.strip(),
        given_name=draft.given_name.strip(),
        role=draft.role,
        country=draft.country,
        reference=draft.reference.strip(),
        status="active",
        created_at=now,
    )
    session.add(holder)
    holder.qualifications.extend(_qualification_rows(site, draft.qualifications))
    session.flush()
    return holder


def update(session: Session, site: Site, holder: Holder, draft: HolderDraft) -> Holder:
    problems = holder_problems(draft, site)
    if problems:
        raise DeskError(*problems)
    holder.family_name = draft.family_name.strip()
    holder.given_name = draft.given_name.strip()
    holder.country = draft.country
    holder.role = draft.role
    holder.reference = draft.reference.strip()
    for old in list(holder.qualifications):
        session.delete(old)
    holder.qualifications.clear()
    session.flush()
    holder.qualifications.extend(_qualification_rows(site, draft.qualifications))
    session.flush()
    return holder


def last_day(site: Site, expires_at: dt.datetime) -> dt.date:
    """The last site-local day before `expires_at` (a qualification is valid through that day)."""
    return (expires_at.astimezone(zoneinfo.ZoneInfo(site.timezone)) - dt.timedelta(microseconds=1)).date()


def draft_of(holder: Holder, site: Site) -> HolderDraft:
    return HolderDraft(
        family_name=holder.family_name,
        given_name=holder.given_name,
        country=holder.country,
        role=holder.role,
        reference=holder.reference,
        qualifications=tuple(
            QualificationDraft(q.kind, last_day(site, q.expires_at) if q.expires_at else None, q.reference)
            for q in holder.qualifications
        ),
    )


def set_assignment(
    session: Session, site: Site, issuer: str, holder: Holder, draft: AssignmentDraft, now: dt.datetime
) -> Assignment:
    problems = assignment_problems(draft, site, issuer)
    if problems:
        raise DeskError(*problems)
    start, end = window(site, draft.first_day, draft.last_day)
    assignment = session.get(Assignment, holder.id)
    if assignment is None:
        assignment = Assignment(holder_id=holder.id, zones="", valid_from=start, valid_until=end, changed_at=now)
        session.add(assignment)
    assignment.zones = " ".join(draft.zones)
    assignment.valid_from, assignment.valid_until, assignment.changed_at = start, end, now
    assignment.shifts.clear()
    session.flush()
    assignment.shifts.extend(Shift(days=" ".join(s.days), starts=s.starts, ends=s.ends) for s in draft.shifts)
    session.flush()
    return assignment


def assignment_of(session: Session, holder_id: str) -> Assignment | None:
    return session.get(Assignment, holder_id)


def shift_windows(assignment: Assignment | None) -> tuple[TimeWindow, ...]:
    """The holder's shifts as site-local windows (none: no shift limit), as the decision core reads them."""
    if assignment is None:
        return ()
    return tuple(TimeWindow.weekly(s.days, s.starts, s.ends) for s in assignment.shifts)


def suspend(session: Session, holder: Holder, reason: str, now: dt.datetime, by: Actor) -> None:
    """Every gate refuses the holder's badges from the next online decision on (`holder_suspended`)."""
    if holder.status == "suspended":
        raise DeskError(f"{holder.given_name} {holder.family_name} is already suspended")
    holder.status = "suspended"
    audit.record_action(
        session,
        "holder_suspended",
        now,
        holder_id=holder.id,
        operator=by.name,
        detail=(reason or "suspended at the desk")[:500],
    )


def reinstate(session: Session, holder: Holder, reason: str, now: dt.datetime, by: Actor) -> None:
    if holder.status != "suspended":
        raise DeskError(f"{holder.given_name} {holder.family_name} is not suspended")
    holder.status = "active"
    audit.record_action(
        session,
        "holder_reinstated",
        now,
        holder_id=holder.id,
        operator=by.name,
        detail=(reason or "reinstated at the desk")[:500],
    )


def search(
    session: Session,
    text: str = "",
    organisation: str = "",
    status: str = "",
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Holder], int]:
    """Holders whose names, reference, holder id or badge id match `text`; and how many match in all."""
    query = select(Holder).join(Organisation)
    for word in text.split()[:5]:
        like = "%" + word.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        badge_holders = select(Badge.holder_id).where(Badge.id == word)
        query = query.where(
            or_(
                func.lower(Holder.family_name).like(like, escape="\\"),
                func.lower(Holder.given_name).like(like, escape="\\"),
                func.lower(Holder.reference) == word.lower(),
                Holder.id == word,
                Holder.id.in_(badge_holders),
            )
        )
    if organisation:
        query = query.where(Organisation.code == organisation)
    if status:
        query = query.where(Holder.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Holder.family_name, Holder.given_name, Holder.id).limit(limit).offset(offset))
    return list(rows), total
