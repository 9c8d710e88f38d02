"""Badge desk operations on the records: organisations, holders, issuing and revoking badges."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import tokens
from gateway.db.models import Badge, Holder, Organisation, Revocation
from gateway.instance import Keyring
from gateway.site import Site


class DeskError(ValueError):
    """A desk operation was refused; the message says why."""


def new_id() -> str:
    """Opaque 72-bit ids: short in the QR code, unguessable, and meaningless outside the gateway."""
    return secrets.token_urlsafe(9)


def get_or_create_organisation(
    session: Session, code: str, name: str, kind: str, country: str
) -> Organisation:
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
    if site.roles and role not in site.roles:
        raise DeskError(f"unknown role {role!r} (known: {', '.join(site.roles)})")
    if not family_name.strip() or not given_name.strip():
        raise DeskError("family and given names are required")
    holder = Holder(
        id=new_id(),
        organisation=organisation,
        family_name=family_name.strip(),
        given_name=given_name.strip(),
        role=role,
        country=country.upper(),
        status="active",
        created_at=now,
    )
    session.add(holder)
    session.flush()
    return holder


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
    operator_id: int | None = None,
) -> Badge:
    unknown = [z for z in zones if z not in site.zones]
    if unknown:
        raise DeskError(f"unknown zone(s): {', '.join(unknown)}")
    if not zones:
        raise DeskError("a badge needs at least one zone")
    if valid_until <= valid_from:
        raise DeskError("the validity window ends before it starts")
    if holder.status != "active":
        raise DeskError(f"holder is {holder.status}; no badge can be issued")
    badge_id = new_id()
    token = tokens.issue_token(
        keyring.badge_signing,
        issuer=issuer,
        badge_id=badge_id,
        holder_id=holder.id,
        zones=zones,
        not_before=int(valid_from.timestamp()),
        expires=int(valid_until.timestamp()),
    )
    badge = Badge(
        id=badge_id,
        holder=holder,
        kid=keyring.badge_kid,
        zones=" ".join(sorted(set(zones))),
        not_before=valid_from.replace(microsecond=0),
        expires_at=valid_until.replace(microsecond=0),
        issued_at=now,
        issued_by=operator_id,
        token=token,
    )
    session.add(badge)
    session.flush()
    return badge


def revoke_badge(
    session: Session, badge_id: str, reason: str, now: dt.datetime, operator_id: int | None = None
) -> Revocation:
    badge = session.get(Badge, badge_id)
    if badge is None:
        raise DeskError(f"no badge {badge_id!r}")
    if badge.revocation is not None:
        return badge.revocation
    revocation = Revocation(badge=badge, reason=reason or "revoked", revoked_at=now, revoked_by=operator_id)
    session.add(revocation)
    session.flush()
    return revocation
