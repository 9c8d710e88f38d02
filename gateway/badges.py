"""Badges: issue, revoke and reissue signed badges; every one of these is audited in the caller's transaction.

A holder carries one valid badge at a time: issuing a new one revokes the others (`superseded`). A revocation
row is written with its audit entry; the decision worker publishes the revocation list from those rows.
"""

from __future__ import annotations

import datetime as dt
import getpass
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from gateway import audit, tokens
from gateway.db.models import Assignment, Badge, Holder, Organisation, Revocation
from gateway.holders import Actor, DeskError, HolderDraft, new_id, register
from gateway.instance import Keyring
from gateway.site import Site

__all__ = ["Actor", "DeskError", "new_id"]


def command_line_actor() -> Actor:
    """Who acts when a command is typed on the gateway host."""
    try:
        return Actor(f"cli:{getpass.getuser()}")
    except (KeyError, OSError):
        return Actor("cli")


def get_or_create_organisation(session: Session, code: str, name: str, kind: str, country: str) -> Organisation:
    org = session.scalar(select(Organisation).where(Organisation.code == code))
    if org is None:
        org = Organisation(code=code, name=name, kind=kind, country=country.upper())
        session.add(org)
        session.flush()
    return org


def register_holder(
    session: Session,
    site: Site,
    organisation: Organisation,
    family_name: str,
    given_name: str,
    role: str,
    country: str,
    now: dt.datetime,
) -> Holder:
    return register(session, site, organisation, HolderDraft(family_name, given_name, country.upper(), role), now)


def qualification_problems(site: Site, holder: Holder, zones: Sequence[str], valid_until: dt.datetime) -> list[str]:
    """Zones whose `requires` the holder does not meet for the whole validity window."""
    held = {q.kind: q.expires_at for q in holder.qualifications}
    problems = []
    for zone in zones:
        for kind in site.zones[zone].requires:
            if kind not in held:
                problems.append(f"zone {zone} requires {kind}, which the holder does not have")
            elif (expires := held[kind]) is not None and expires < valid_until:
                problems.append(
                    f"zone {zone} requires {kind}, which expires on {expires:%Y-%m-%d}, before the badge ends"
                )
    return problems


def issue_badge(
    session: Session,
    site: Site,
    keyring: Keyring,
    issuer: str,
    holder: Holder,
    zones: list[str],
    valid_from: dt.datetime,
    valid_until: dt.datetime,
    now: dt.datetime,
    by: Actor | None = None,
) -> Badge:
    """Sign and record a badge for `zones` (zone codes) over [valid_from, valid_until); audited."""
    by = by or command_line_actor()
    unknown = [z for z in zones if z not in site.zones]
    if unknown:
        raise DeskError(f"unknown zone(s): {', '.join(unknown)}")
    if not zones:
        raise DeskError("a badge needs at least one zone")
    if valid_until <= valid_from:
        raise DeskError("the validity window ends before it starts")
    if holder.status != "active":
        raise DeskError(f"holder is {holder.status}; no badge can be issued")
    zones = sorted(set(zones))
    badge_id = new_id()
    while session.get(Badge, badge_id) is not None:  # 48 random bits: a clash is rare, but not impossible
        badge_id = new_id()
    token = tokens.issue_token(
        keyring.badge_signing,
        issuer=issuer,
        badge_id=badge_id,
        holder_id=holder.id,
        zones=[site.zones[z].on_badge for z in zones],
        not_before=int(valid_from.timestamp()),
        expires=int(valid_until.timestamp()),
    )
    if not tokens.fits_qr(token):
        raise DeskError(tokens.size_problem(issuer, [site.zones[z].on_badge for z in zones], len(holder.id)) or "")
    badge = Badge(
        id=badge_id,
        holder=holder,
        kid=keyring.badge_kid,
        zones=" ".join(zones),
        not_before=valid_from.replace(microsecond=0),
        expires_at=valid_until.replace(microsecond=0),
        issued_at=now,
        issued_by=by.operator_id,
        token=token,
    )
    session.add(badge)
    session.flush()
    for other in _unrevoked(session, holder.id):
        if other.id != badge.id:
            _revoke(session, other, f"superseded by badge {badge.id}", now, by)
    audit.record_action(
        session,
        "badge_issued",
        now,
        badge_id=badge.id,
        holder_id=holder.id,
        operator=by.name,
        detail=f"zones {' '.join(zones)}; valid {valid_from:%Y-%m-%d %H:%M}Z to {valid_until:%Y-%m-%d %H:%M}Z; "
        f"key {keyring.badge_kid}",
    )
    return badge


def issue_from_assignment(
    session: Session, site: Site, keyring: Keyring, issuer: str, holder: Holder, now: dt.datetime, by: Actor
) -> Badge:
    """Issue the badge the holder's assignment describes, if the holder qualifies for its zones throughout."""
    assignment = session.get(Assignment, holder.id)
    if assignment is None:
        raise DeskError("the holder has no assignment yet: give zones and validity dates first")
    if assignment.valid_until <= now:
        raise DeskError(f"the assignment ended on {assignment.valid_until:%Y-%m-%d}: change its dates first")
    problems = qualification_problems(site, holder, assignment.zone_codes, assignment.valid_until)
    if problems:
        raise DeskError(*problems)
    return issue_badge(
        session,
        site,
        keyring,
        issuer,
        holder,
        assignment.zone_codes,
        assignment.valid_from,
        assignment.valid_until,
        now,
        by,
    )


def _unrevoked(session: Session, holder_id: str) -> list[Badge]:
    return list(
        session.scalars(
            select(Badge).where(Badge.holder_id == holder_id).outerjoin(Revocation).where(Revocation.id.is_(None))
        )
    )


def current_badge(session: Session, holder_id: str, now: dt.datetime) -> Badge | None:
    """The holder's badge that is neither revoked nor over, if any."""
    live = [b for b in _unrevoked(session, holder_id) if b.expires_at > now]
    return max(live, key=lambda b: b.issued_at) if live else None


def _revoke(session: Session, badge: Badge, reason: str, now: dt.datetime, by: Actor) -> Revocation:
    revocation = Revocation(badge=badge, reason=reason[:200], revoked_at=now, revoked_by=by.operator_id)
    session.add(revocation)
    session.flush()
    audit.record_action(
        session,
        "badge_revoked",
        now,
        badge_id=badge.id,
        holder_id=badge.holder_id,
        operator=by.name,
        detail=reason[:500],
    )
    return revocation


def revoke_badge(session: Session, badge_id: str, reason: str, now: dt.datetime, by: Actor | None = None) -> Revocation:
    """Revoke a badge (at once: the next online decision denies it); revoking twice changes nothing."""
    badge = session.get(Badge, badge_id)
    if badge is None:
        raise DeskError(f"no badge {badge_id!r}")
    if badge.revocation is not None:
        return badge.revocation
    return _revoke(session, badge, reason or "revoked", now, by or command_line_actor())


def reissue_badge(
    session: Session,
    site: Site,
    keyring: Keyring,
    issuer: str,
    badge_id: str,
    reason: str,
    now: dt.datetime,
    by: Actor,
) -> Badge:
    """Replace a lost or damaged badge: the old one is revoked in the same transaction, the new one has a new id.

    The new badge follows the holder's assignment if there is one, else the old badge's zones and window.
    """
    old = session.get(Badge, badge_id)
    if old is None:
        raise DeskError(f"no badge {badge_id!r}")
    holder = old.holder
    if old.revocation is None:
        _revoke(session, old, f"replaced: {reason or 'lost'}", now, by)
    assignment = session.get(Assignment, holder.id)
    if assignment is not None:
        return issue_from_assignment(session, site, keyring, issuer, holder, now, by)
    start = max(old.not_before, now - dt.timedelta(seconds=1))
    return issue_badge(session, site, keyring, issuer, holder, old.zone_codes, start, old.expires_at, now, by)


@dataclass(frozen=True)
class BatchResult:
    issued: list[Badge]
    skipped: list[tuple[Holder, str]]  # holder, why no badge was issued


def issue_for_organisation(
    session: Session,
    site: Site,
    keyring: Keyring,
    issuer: str,
    organisation: Organisation,
    now: dt.datetime,
    by: Actor,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> BatchResult:
    """Issue a badge to every active holder of a contingent who has an assignment and no current badge for it."""
    holders = list(
        session.scalars(
            select(Holder)
            .where(Holder.organisation_id == organisation.id)
            .options(selectinload(Holder.qualifications))
            .order_by(Holder.family_name, Holder.given_name, Holder.id)
        )
    )
    assignments = {
        a.holder_id: a
        for a in session.scalars(select(Assignment).where(Assignment.holder_id.in_([h.id for h in holders])))
    }
    live = {
        b.holder_id: b
        for b in session.scalars(
            select(Badge)
            .join(Holder)
            .where(Holder.organisation_id == organisation.id, Badge.expires_at > now)
            .outerjoin(Revocation)
            .where(Revocation.id.is_(None))
        )
    }
    issued: list[Badge] = []
    skipped: list[tuple[Holder, str]] = []
    for done, holder in enumerate(holders, 1):
        assignment = assignments.get(holder.id)
        badge = live.get(holder.id)
        if holder.status != "active":
            skipped.append((holder, f"holder is {holder.status}"))
        elif assignment is None:
            skipped.append((holder, "no assignment"))
        elif badge is not None and _matches(badge, assignment):
            skipped.append((holder, f"already holds badge {badge.id}"))
        else:
            try:
                issued.append(issue_from_assignment(session, site, keyring, issuer, holder, now, by))
            except DeskError as exc:
                skipped.append((holder, str(exc)))
        progress(done, len(holders))
    return BatchResult(issued, skipped)


def _matches(badge: Badge, assignment: Assignment) -> bool:
    return (
        badge.zones == " ".join(sorted(assignment.zone_codes))
        and badge.not_before == assignment.valid_from.replace(microsecond=0)
        and badge.expires_at == assignment.valid_until.replace(microsecond=0)
    )
