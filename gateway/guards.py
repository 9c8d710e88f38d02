"""Guards of the gate page: who they are, their PIN, their override right, and their sessions at a reader's post.

A guard is a holder with a row in `guards`, added by desk or admin staff (`python -m gateway guard add`). At a
reader's gate page the guard logs in with their own badge (its id, or its QR text read by the camera) and a
PIN; the gateway checks both and opens a session bound to that reader. The session ends when the guard leaves
the post, when the page sees them idle, or here after IDLE (a backstop for a page that went dark).
Wrong PINs are counted: MAX_PIN_FAILURES in a row lock the guard out for LOCKOUT. Only the PIN's scrypt hash
and the session token's SHA-256 are stored. Every login, refusal and logout is audited.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from gateway import audit, core, tokens
from gateway.db.models import Badge, Guard, GuardSession, Holder, Revocation
from gateway.holders import Actor, DeskError
from gateway.instance import Keyring
from gateway.site import Site

MAX_PIN_FAILURES = 5
LOCKOUT = dt.timedelta(minutes=15)
IDLE = dt.timedelta(minutes=30)  # the gate page's own idle timeout is shorter; this is the gateway's backstop
LONGEST_SESSION = dt.timedelta(hours=14)  # longer than any shift
_PIN = re.compile(r"^[0-9]{4,12}\Z")
# A refused login says no more than this to the gate page; the audit keeps the precise cause.
REFUSED = "login_refused"
LOCKED = "guard_locked"


def identity(holder_id: str) -> str:
    """How a guard appears as the operator of an audit entry."""
    return f"guard:{holder_id}"


def hash_pin(pin: str) -> str:
    if not _PIN.match(pin):
        raise DeskError("a PIN is 4 to 12 digits")
    return generate_password_hash(pin, method="scrypt")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def set_guard(session: Session, holder_id: str, pin: str, can_override: bool, now: dt.datetime, by: Actor) -> Guard:
    """Make a holder a guard, or give an existing guard a new PIN and right (unlocking them); audited."""
    holder = session.get(Holder, holder_id)
    if holder is None:
        raise DeskError(f"no holder {holder_id!r}")
    pin_hash = hash_pin(pin)
    guard = session.get(Guard, holder_id)
    if guard is None:
        guard = Guard(holder_id=holder_id, created_at=now, created_by=by.name)
        session.add(guard)
    guard.pin_hash, guard.can_override, guard.active = pin_hash, can_override, True
    guard.failed_pins, guard.locked_until = 0, None
    session.flush()
    audit.record_action(
        session,
        "guard_set",
        now,
        holder_id=holder_id,
        operator=by.name,
        detail=f"gate page guard {holder.given_name} {holder.family_name}; override right: "
        f"{'yes' if can_override else 'no'}",
    )
    return guard


def remove_guard(session: Session, holder_id: str, now: dt.datetime, by: Actor) -> None:
    """Withdraw a guard's access to gate pages and end their open sessions; audited."""
    guard = session.get(Guard, holder_id)
    if guard is None or not guard.active:
        raise DeskError(f"{holder_id!r} is not a guard")
    guard.active = False
    for open_session in session.scalars(
        select(GuardSession).where(GuardSession.holder_id == holder_id, GuardSession.ended_at.is_(None))
    ):
        open_session.ended_at = now
    audit.record_action(session, "guard_removed", now, holder_id=holder_id, operator=by.name)


def list_guards(session: Session) -> list[tuple[Guard, Holder]]:
    rows = session.execute(
        select(Guard, Holder).join(Holder, Holder.id == Guard.holder_id).order_by(Holder.family_name, Holder.id)
    )
    return [(row[0], row[1]) for row in rows]


@dataclass(frozen=True)
class Login:
    """The outcome of a login: a session token for the page, or the error code it may show."""

    error: str = ""
    token: str = ""
    guard: Guard | None = None
    holder: Holder | None = None


def _badge_of(session: Session, text: str, keyring: Keyring, issuer: str, site: Site) -> tuple[Badge | None, str]:
    """The badge a guard presented (typed id, or QR text whose signature is checked), or why there is none."""
    if text.count(".") == 2:
        claims = tokens.verify_token(text, keyring.badge_public, issuer, site.zone_for_badge_code)
        if isinstance(claims, core.TokenProblem):
            return None, f"badge QR not genuine: {claims.reason.value}"
        text = claims.badge_id
    badge = session.get(Badge, text) if text else None
    return (badge, "") if badge is not None else (None, "no such badge")


def login(
    session: Session,
    site: Site,
    keyring: Keyring,
    issuer: str,
    reader: str,
    badge_text: str,
    pin: str,
    now: dt.datetime,
) -> Login:
    """Check a guard's badge and PIN at `reader` (inside the caller's transaction) and open a session."""
    gate = site.readers[reader].gate if reader in site.readers else ""
    badge, why = _badge_of(session, badge_text.strip(), keyring, issuer, site)
    guard = None
    if badge is not None:
        guard = session.scalar(select(Guard).where(Guard.holder_id == badge.holder_id).with_for_update())
        if session.scalar(select(Revocation.id).where(Revocation.badge_id == badge.id)) is not None:
            why = "badge revoked"
        elif guard is None or not guard.active:
            why = "not a guard"
        elif guard.holder.status != "active":
            why = f"holder is {guard.holder.status}"
        elif guard.locked_until is not None and guard.locked_until > now:
            why = "locked after too many wrong PINs"
        elif not check_password_hash(guard.pin_hash, pin):
            guard.failed_pins += 1
            why = f"wrong PIN ({guard.failed_pins} in a row)"
            if guard.failed_pins >= MAX_PIN_FAILURES:
                guard.locked_until, guard.failed_pins = now + LOCKOUT, 0
                why += f"; locked for {int(LOCKOUT.total_seconds() // 60)} min"
    holder_id = badge.holder_id if badge is not None else ""
    if why:
        audit.record_action(
            session,
            "guard_login_refused",
            now,
            reader=reader,
            gate=gate,
            badge_id=badge.id if badge is not None else "",
            holder_id=holder_id,
            operator=identity(holder_id) if holder_id else "",
            detail=why,
        )
        return Login(error=LOCKED if why.startswith("locked") else REFUSED)
    assert guard is not None and badge is not None
    guard.failed_pins, guard.locked_until = 0, None
    token = secrets.token_urlsafe(32)
    session.add(
        GuardSession(token_hash=_digest(token), holder_id=guard.holder_id, reader=reader, started_at=now, last_seen=now)
    )
    audit.record_action(
        session,
        "guard_login",
        now,
        reader=reader,
        gate=gate,
        badge_id=badge.id,
        holder_id=guard.holder_id,
        operator=identity(guard.holder_id),
        detail=f"override right: {'yes' if guard.can_override else 'no'}",
    )
    return Login(token=token, guard=guard, holder=guard.holder)


def session_guard(session: Session, token: str, reader: str, now: dt.datetime) -> Guard | None:
    """The guard of an open, fresh session at `reader`, its last use moved to `now`; else None (and it ends)."""
    if not token:
        return None
    row = session.get(GuardSession, _digest(token))
    if row is None or row.reader != reader or row.ended_at is not None:
        return None
    guard = session.get(Guard, row.holder_id)
    if (
        now - row.last_seen > IDLE
        or now - row.started_at > LONGEST_SESSION
        or guard is None
        or not guard.active
        or guard.holder.status != "active"
    ):
        row.ended_at = now
        return None
    row.last_seen = now
    return guard


def logout(session: Session, token: str, reader: str, now: dt.datetime, why: str) -> bool:
    """End a guard's session at `reader` (they left the post, or the page saw them idle); audited."""
    row = session.get(GuardSession, _digest(token)) if token else None
    if row is None or row.reader != reader or row.ended_at is not None:
        return False
    row.ended_at = now
    audit.record_action(
        session,
        "guard_logout",
        now,
        reader=reader,
        holder_id=row.holder_id,
        operator=identity(row.holder_id),
        detail=why[:200],
    )
    return True
