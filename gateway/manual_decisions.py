"""What a reader's gate page may ask of the gateway for the guard at its post: log in and out, look a holder up,
see a holder's card with their photo, ask for a manual decision, force a grant.

A manual decision goes through the same facts and the same pure core as a scan (gateway.decisions and
gateway.core); only the claims come from the holder's current badge on record (or their assignment when no
badge is printed yet) instead of a QR code, because the guard identified the holder by face. A forced grant
needs the guard's override right and a reason; it is logged as mode "forced" with an "alarm" entry of reason
"forced_grant" for the leads. As for scans, the audit entries are committed before the answer is signed.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway import audit, contract, core, guards
from gateway.db.models import AuditEntry, Badge, Guard, Holder, Organisation, Revocation
from gateway.decisions import current_occupancy, current_threat_level, facts_for
from gateway.holders import assignment_of
from gateway.instance import Keyring
from gateway.site import Site

log = logging.getLogger(__name__)

MAX_LOOKUP = 10  # holders in one look-up answer: the guard narrows the search rather than scrolls
THUMBNAIL = (112, 144)  # pixels: a face a guard can compare, small enough for one MQTT message
CARD_WINDOW = dt.timedelta(minutes=10)  # a reader may see the card of its own decisions this long
NO_SESSION = "no_guard_session"
NO_RIGHT = "no_override_right"


def thumbnail(photo: bytes | None) -> str:
    """The holder's photo as a small JPEG in base64 ("" when there is none or it cannot be read)."""
    if not photo:
        return ""
    try:
        with Image.open(io.BytesIO(photo)) as image:
            small = image.convert("RGB")
            small.thumbnail(THUMBNAIL, Image.Resampling.LANCZOS)
            out = io.BytesIO()
            small.save(out, "JPEG", quality=70)
    except (OSError, ValueError):
        log.warning("a stored photo could not be read")
        return ""
    return base64.b64encode(out.getvalue()).decode("ascii")


def name_of(holder: Holder) -> str:
    return f"{holder.given_name} {holder.family_name.upper()}"


def card_of(holder: Holder, with_photo: bool = True) -> dict[str, Any]:
    """What a guard needs to recognise a holder."""
    return {
        "id": holder.id,
        "name": name_of(holder),
        "role": holder.role,
        "organisation": holder.organisation.name,
        "status": holder.status,
        "photo": thumbnail(holder.photo) if with_photo else "",
    }


def find_holders(session: Session, query: str, limit: int = MAX_LOOKUP) -> tuple[list[Holder], bool]:
    """Holders whose name, reference, badge number or organisation (code or name) match every word of `query`;
    and whether there were more than `limit`."""
    statement = select(Holder).join(Organisation)
    words = query.split()[:5]
    if not words:
        return [], False
    for word in words:
        like = "%" + word.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        statement = statement.where(
            or_(
                func.lower(Holder.family_name).like(like, escape="\\"),
                func.lower(Holder.given_name).like(like, escape="\\"),
                func.lower(Holder.reference) == word.lower(),
                Holder.id == word,
                Holder.id.in_(select(Badge.holder_id).where(Badge.id == word)),
                func.lower(Organisation.code) == word.lower(),
                func.lower(Organisation.name).like(like, escape="\\"),
            )
        )
    rows = list(session.scalars(statement.order_by(Holder.family_name, Holder.given_name, Holder.id).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def current_badges(session: Session, holder_id: str) -> list[Badge]:
    """The holder's badges that are not revoked, newest first."""
    return list(
        session.scalars(
            select(Badge)
            .outerjoin(Revocation, Revocation.badge_id == Badge.id)
            .where(Badge.holder_id == holder_id, Revocation.id.is_(None))
            .order_by(Badge.issued_at.desc(), Badge.id)
        )
    )


def claims_for(session: Session, holder: Holder, now: dt.datetime) -> tuple[core.BadgeClaims, bool]:
    """What the holder's badge would prove, from the records; and whether it rests on a badge on record.

    The newest badge that is not revoked; else the assignment a badge would be printed from (the badge is not
    printed yet); else the newest revoked badge (the core then denies: revoked); else nothing is permitted.
    """
    badges = current_badges(session, holder.id)
    if badges:
        return _from_badge(badges[0]), True
    assignment = assignment_of(session, holder.id)
    if assignment is not None:
        claims = core.BadgeClaims(
            badge_id="",
            holder_id=holder.id,
            zones=frozenset(assignment.zone_codes),
            not_before=int(assignment.valid_from.timestamp()),
            expires=int(assignment.valid_until.timestamp()),
            kid="",
        )
        return claims, False
    revoked = session.scalars(
        select(Badge).where(Badge.holder_id == holder.id).order_by(Badge.issued_at.desc()).limit(1)
    ).first()
    if revoked is not None:
        return _from_badge(revoked), True
    stamp = int(now.timestamp())
    return core.BadgeClaims("", holder.id, frozenset(), stamp, stamp + 1, ""), False


def _from_badge(badge: Badge) -> core.BadgeClaims:
    return core.BadgeClaims(
        badge_id=badge.id,
        holder_id=badge.holder_id,
        zones=frozenset(badge.zone_codes),
        not_before=int(badge.not_before.timestamp()),
        expires=int(badge.expires_at.timestamp()),
        kid=badge.kid,
    )


@dataclass(frozen=True)
class Reply:
    """An answer before it is signed."""

    error: str = ""
    body: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclass
class GuardDesk:
    """Answers a gate page's requests (contract.GuardRequest) with signed contract.GuardAnswer."""

    site: Site
    keyring: Callable[[], Keyring]
    issuer: str
    sessions: sessionmaker[Session]
    clock: Callable[[], dt.datetime]

    def answer(self, request: contract.GuardRequest) -> contract.GuardAnswer:
        try:
            reply = self._reply(request)
        except IntegrityError:
            # The nonce is already in the audit: a repeated request is not decided, logged or answered twice.
            reply = Reply(error="nonce_reused")
        now_ms = int(self.clock().timestamp() * 1000)
        unsigned = contract.GuardAnswer(
            reader=request.reader,
            nonce=request.nonce,
            op=request.op,
            ok=not reply.error,
            error=reply.error,
            body=reply.body,
            issued_ms=now_ms,
            kid="",
        )
        return contract.sign_guard_answer(unsigned, self.keyring().decision_signing)

    def _reply(self, request: contract.GuardRequest) -> Reply:
        if request.reader not in self.site.readers:
            return Reply(error="unknown_reader")
        now = self.clock()
        with self.sessions() as session, session.begin():
            if request.op == "login":
                return self._login(session, request, now)
            if request.op == "logout":
                guards.logout(session, request.session, request.reader, now, request.note or "left the post")
                return Reply()
            guard = guards.session_guard(session, request.session, request.reader, now)
            if guard is None:
                return Reply(error=NO_SESSION)
            if request.op == "lookup":
                return self._lookup(session, request, guard, now)
            if request.op == "card":
                return self._card(session, request, now)
            return self._decide(session, request, guard, now)

    def _login(self, session: Session, request: contract.GuardRequest, now: dt.datetime) -> Reply:
        outcome = guards.login(
            session, self.site, self.keyring(), self.issuer, request.reader, request.badge, request.pin, now
        )
        if outcome.error or outcome.guard is None or outcome.holder is None:
            return Reply(error=outcome.error or guards.REFUSED)
        body = {
            "session": outcome.token,
            "guard": {
                "id": outcome.holder.id,
                "name": name_of(outcome.holder),
                "can_override": outcome.guard.can_override,
            },
            "idle_s": int(guards.IDLE.total_seconds()),
        }
        return Reply(body=body)

    def _lookup(self, session: Session, request: contract.GuardRequest, guard: Guard, now: dt.datetime) -> Reply:
        found, more = find_holders(session, request.query)
        audit.record_action(
            session,
            "holder_lookup",
            now,
            reader=request.reader,
            gate=self.site.readers[request.reader].gate,
            operator=guards.identity(guard.holder_id),
            detail=f"{request.query!r}: {len(found)}{'+' if more else ''} found",
        )
        holders = [
            {**card_of(h, with_photo=False), "badges": [b.id for b in current_badges(session, h.id)]} for h in found
        ]
        return Reply(body={"holders": holders, "more": more})

    def _card(self, session: Session, request: contract.GuardRequest, now: dt.datetime) -> Reply:
        holder_id = request.holder
        if request.ref:
            # Only the reader that took a decision may see whose it was, and only for a while.
            entry = session.scalar(
                select(AuditEntry).where(
                    AuditEntry.ref == request.ref, AuditEntry.kind == "decision", AuditEntry.reader == request.reader
                )
            )
            if entry is None or now - entry.at > CARD_WINDOW or not entry.holder_id:
                return Reply(error="no_holder")
            holder_id = entry.holder_id
        holder = session.get(Holder, holder_id) if holder_id else None
        if holder is None:
            return Reply(error="no_holder")
        return Reply(body={"holder": card_of(holder), "ref": request.ref})

    def _decide(self, session: Session, request: contract.GuardRequest, guard: Guard, now: dt.datetime) -> Reply:
        reader = self.site.readers[request.reader]
        operator = guards.identity(guard.holder_id)
        holder = session.get(Holder, request.holder) if request.holder else None
        if holder is None:
            return Reply(error="unknown_holder")
        forcing = request.op == "force"
        if forcing and not guard.can_override:
            audit.record_action(
                session,
                "override_refused",
                now,
                reader=request.reader,
                gate=reader.gate,
                holder_id=holder.id,
                operator=operator,
                detail="the guard has no override right",
            )
            return Reply(error=NO_RIGHT)
        if forcing and (not request.why or (request.why == "other" and not request.note.strip())):
            return Reply(error="force_reason_missing")
        claims, on_record = claims_for(session, holder, now)
        facts = facts_for(session, claims)
        if not on_record:
            # No badge printed yet: the guard vouches for who it is; the holder's standing still counts.
            facts = dataclasses.replace(facts, badge_known=True, badge_revoked=False)
        level = current_threat_level(session, self.site)
        decision = core.decide(claims, facts, self.site, request.reader, level, now, current_occupancy(session))
        forced = forcing and not decision.allow
        allow = decision.allow or forced
        reason = contract.FORCED_GRANT if forced else decision.reason.value
        answer = self._sign(request, reader.gate, allow, reason, claims.badge_id, now)
        rules = f"{decision.reason.value}: {decision.detail}"
        if forced:
            detail = f"forced by {operator} ({request.why}: {request.note.strip()}); the rules said {rules}"
        else:
            detail = f"manual decision by {operator}; threat level {level}; {decision.detail}"
        entry = audit.Entry(
            kind="decision",
            ref=request.nonce,
            at=now,
            recorded_at=now,
            reader=request.reader,
            gate=reader.gate,
            badge_id=claims.badge_id,
            holder_id=holder.id,
            operator=operator,
            allow=allow,
            reason=reason,
            mode="forced" if forced else "manual",
            detail=detail[:2000],
            expires_ms=answer.expires_ms,
        )
        entries = [entry]
        if forced:
            entries.append(dataclasses.replace(entry, kind="alarm", ref=f"alarm:{request.nonce}", expires_ms=None))
        audit.append_many(session, entries)
        session.flush()  # a repeated nonce fails here, before anything is answered
        log.info(
            "%s decision reader=%s holder=%s allow=%s reason=%s by %s",
            entry.mode,
            request.reader,
            holder.id,
            allow,
            reason,
            operator,
        )
        body = {
            "decision": dataclasses.asdict(answer),
            "mode": entry.mode,
            "rules": {"allow": decision.allow, "reason": decision.reason.value, "detail": decision.detail[:300]},
            "holder": card_of(holder),
        }
        return Reply(body=body)

    def _sign(
        self, request: contract.GuardRequest, gate: str, allow: bool, reason: str, badge: str, now: dt.datetime
    ) -> contract.DecisionAnswer:
        now_ms = int(audit.to_ms(now).timestamp() * 1000)
        unsigned = contract.DecisionAnswer(
            reader=request.reader,
            gate=gate,
            nonce=request.nonce,
            allow=allow,
            reason=reason,
            badge=badge,
            decided_ms=now_ms,
            expires_ms=now_ms + contract.ANSWER_TTL_MS,
            kid="",
        )
        return contract.sign_answer(unsigned, self.keyring().decision_signing)
