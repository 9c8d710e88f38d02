"""Retention of personal data: some days after a holder's last badge ended, their personal data is removed.

Removed: family and given names, photo, the contingent's own reference, qualification references (licence numbers).
Kept: the holder's random id (what the audit and the badge tokens name), organisation, role, country, status, and
an HMAC-SHA256 of the normalised name under the instance's identity key, so that a lead who knows a name can still
ask "was this person here?" without the database holding the name. The audit is not touched: its entries name
holders by id only, so the hash chain still verifies. Every removal, and every run, is itself an audit entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from gateway import audit
from gateway.db.models import Assignment, AuditEntry, Badge, Holder, Qualification, Revocation
from gateway.instance import InstanceError, write_private

KEY_FILE = "identity_key"  # in the instance folder, owner-only; back it up with the keys


class RetentionError(RuntimeError):
    """Retention cannot run: no period is set, or the identity key is missing or unsafe."""


def identity_key(folder: Path, create: bool = False) -> bytes | None:
    """The instance's identity key (made on the first run that removes anything); None when there is none yet."""
    path = folder / KEY_FILE
    if not path.exists():
        if not create:
            return None
        write_private(path, secrets.token_bytes(32))
    if path.stat().st_mode & 0o077:
        raise InstanceError(f"{path} is readable by others; chmod 600 it")
    key = path.read_bytes()
    if len(key) < 32:
        raise InstanceError(f"{path} is damaged (shorter than 32 bytes)")
    return key


def normalise(name: str) -> str:
    """One spelling per name: compatibility forms, case, accents and spacing do not matter (Léa = LEA = Lea)."""
    decomposed = unicodedata.normalize("NFKD", name)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def identity_hmac(key: bytes, family_name: str, given_name: str) -> str:
    message = f"{normalise(family_name)}\x1f{normalise(given_name)}".encode()
    return hmac.new(key, b"acs-identity-v1\n" + message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Due:
    holder_id: str
    ended: dt.datetime  # when the holder's last badge (or assignment) ended


def _ends(session: Session) -> dict[str, dt.datetime]:
    """When access ended for every holder whose personal data is still there (in the future: it has not)."""
    created = dict(
        session.execute(select(Holder.id, Holder.created_at).where(Holder.personal_data_removed_at.is_(None))).all()
    )
    ends: dict[str, dt.datetime] = {}
    for holder_id, expires_at, revoked_at in session.execute(
        select(Badge.holder_id, Badge.expires_at, Revocation.revoked_at).outerjoin(Revocation)
    ):
        if holder_id in created:
            end = min(expires_at, revoked_at) if revoked_at is not None else expires_at
            ends[holder_id] = max(ends.get(holder_id, end), end)
    for holder_id, until in session.execute(select(Assignment.holder_id, Assignment.valid_until)):
        # An assignment still running keeps the data between badges (a lost badge waiting to be reissued).
        if holder_id in created:
            ends[holder_id] = max(ends.get(holder_id, until), until)
    for holder_id, at in created.items():
        ends.setdefault(holder_id, at)  # never badged nor assigned: counted from registration
    return ends


def due(session: Session, now: dt.datetime, days: int) -> list[Due]:
    """Holders whose access ended at least `days` days ago and whose personal data is still there."""
    cutoff = now - dt.timedelta(days=days)
    return sorted(
        (Due(holder_id, end) for holder_id, end in _ends(session).items() if end <= cutoff),
        key=lambda d: (d.ended, d.holder_id),
    )


def _remove(session: Session, key: bytes, holder: Holder, now: dt.datetime) -> None:
    holder.identity_hmac = identity_hmac(key, holder.family_name, holder.given_name)
    holder.family_name = holder.given_name = holder.reference = ""
    holder.photo = holder.photo_type = None
    holder.personal_data_removed_at = now
    session.execute(update(Qualification).where(Qualification.holder_id == holder.id).values(reference=""))


@dataclass(frozen=True)
class RetentionReport:
    cutoff: dt.datetime
    removed: list[Due]
    dry_run: bool


def run(
    session: Session, key: bytes | None, now: dt.datetime, days: int, operator: str, dry_run: bool = False
) -> RetentionReport:
    """Remove the personal data of every holder due (inside the caller's transaction); dry_run only lists them."""
    cutoff = now - dt.timedelta(days=days)
    found = due(session, now, days)
    if dry_run:
        return RetentionReport(cutoff, found, True)
    if key is None:
        raise RetentionError("no identity key: retention needs one to keep the keyed hash of each name")
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("PRAGMA secure_delete = ON"))  # freed pages (photos) are zeroed, not left in the file
    for item in found:
        holder = session.get(Holder, item.holder_id)
        assert holder is not None
        _remove(session, key, holder, now)
        audit.record_action(
            session,
            "personal_data_removed",
            now,
            holder_id=item.holder_id,
            operator=operator,
            detail=f"names, photo and references removed {days} days after access ended "
            f"({item.ended:%Y-%m-%d %H:%M}Z); a keyed hash of the name is kept",
        )
    audit.record_action(
        session,
        "retention_run",
        now,
        operator=operator,
        detail=f"personal data of {len(found)} holder(s) removed: access ended by {cutoff:%Y-%m-%d %H:%M}Z "
        f"({days} days)",
    )
    return RetentionReport(cutoff, found, False)


@dataclass(frozen=True)
class Sighting:
    """What the audit holds about one holder who matches a name."""

    holder_id: str
    removed: bool  # found by the keyed hash: the personal data is gone
    decisions: int
    granted: int
    first: dt.datetime | None
    last: dt.datetime | None
    gates: tuple[str, ...]


def lookup(session: Session, key: bytes | None, family_name: str, given_name: str) -> list[Sighting]:
    """Was this person here? Holders with this name (still named, or removed and matching the keyed hash)."""
    wanted = (normalise(family_name), normalise(given_name))
    ids: dict[str, bool] = {}
    # Names are compared normalised (accents, case), which SQL cannot do on both databases: compare here.
    named = session.execute(
        select(Holder.id, Holder.family_name, Holder.given_name).where(Holder.personal_data_removed_at.is_(None))
    )
    for holder_id, family, given in named:
        if (normalise(family), normalise(given)) == wanted:
            ids[holder_id] = False
    if key is not None:
        digest = identity_hmac(key, family_name, given_name)
        for holder_id in session.scalars(select(Holder.id).where(Holder.identity_hmac == digest)):
            ids[holder_id] = True
    sightings = []
    for holder_id, removed in sorted(ids.items()):
        rows = session.execute(
            select(AuditEntry.at, AuditEntry.allow, AuditEntry.gate)
            .where(AuditEntry.holder_id == holder_id, AuditEntry.kind == "decision")
            .order_by(AuditEntry.seq)
        ).all()
        sightings.append(
            Sighting(
                holder_id,
                removed,
                len(rows),
                sum(1 for r in rows if r.allow),
                rows[0].at if rows else None,
                rows[-1].at if rows else None,
                tuple(sorted({r.gate for r in rows if r.gate})),
            )
        )
    return sightings
