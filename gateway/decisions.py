"""The decision service: requests in, audited and signed answers out.

Order matters: verify the token, gather facts, decide with the pure core, append the audit entries and
commit, and only then sign and release the answers. Requests that arrive together are decided in one
transaction and committed once (group commit): the answers wait for that commit, never the other way round.
A batch that cannot be logged is answered with denials (`not_logged`). A repeated nonce gets the answer
recorded the first time, and no second entry.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway import audit, contract, core, tokens
from gateway.db.models import AuditEntry, Badge, Holder, Occupancy, Position, Qualification, SiteState
from gateway.instance import Keyring
from gateway.site import Site, TimeWindow

log = logging.getLogger(__name__)

THREAT_LEVEL_KEY = "threat_level"


def current_threat_level(session: Session, site: Site) -> str:
    row = session.get(SiteState, THREAT_LEVEL_KEY)
    return row.value if row is not None and row.value in site.threat_levels else site.default_threat_level


def current_occupancy(session: Session) -> dict[str, int]:
    return {row.zone: row.count for row in session.scalars(select(Occupancy))}


def facts_for(session: Session, claims: core.BadgeClaims) -> core.HolderFacts:
    badge = session.get(Badge, claims.badge_id)
    holder = session.get(Holder, claims.holder_id)
    if holder is None:
        return core.HolderFacts(
            badge_known=badge is not None,
            badge_revoked=bool(badge is not None and badge.revocation is not None),
            holder_status=None,
        )
    qualifications = {
        q.kind: q.expires_at for q in session.scalars(select(Qualification).where(Qualification.holder_id == holder.id))
    }
    position = session.get(Position, holder.id)
    return core.HolderFacts(
        badge_known=badge is not None and badge.holder_id == claims.holder_id,
        badge_revoked=bool(badge is not None and badge.revocation is not None),
        holder_status=holder.status,
        role=holder.role,
        qualifications=qualifications,
        shifts=shifts_for(session, holder),
        whereabouts=core.Whereabouts(position.zone, position.since) if position is not None else None,
    )


def shifts_for(session: Session, holder: Holder) -> tuple[TimeWindow, ...]:
    """The holder's shift windows (none recorded: no shift limit)."""
    return ()


@dataclass
class DecisionService:
    site: Site
    keyring: Callable[[], Keyring]  # re-read when keys rotate
    issuer: str
    sessions: sessionmaker[Session]
    clock: Callable[[], dt.datetime]

    def answer(self, request: contract.DecisionRequest) -> contract.DecisionAnswer:
        return self.answer_many([request])[0]

    def answer_many(self, requests: Sequence[contract.DecisionRequest]) -> list[contract.DecisionAnswer]:
        received = self.clock()
        try:
            return self._decide_and_log(requests, received)
        except IntegrityError:
            # Another worker logged one of these nonces in the meantime: decide them one by one.
            if len(requests) > 1:
                return [self.answer(r) for r in requests]
            log.error("nonce %s: logged concurrently and not found", requests[0].nonce)
            return [self._not_logged(requests[0], received)]
        except SQLAlchemyError as exc:
            log.error("%d decision(s) not logged, denying: %s", len(requests), exc)
            return [self._not_logged(r, received) for r in requests]

    def _not_logged(self, request: contract.DecisionRequest, now: dt.datetime) -> contract.DecisionAnswer:
        decision = core.Decision(False, core.Reason.NOT_LOGGED)
        return self._sign(request.reader, self._gate_of(request.reader), request.nonce, decision, "", now)

    def _gate_of(self, reader_code: str) -> str:
        reader = self.site.readers.get(reader_code)
        return reader.gate if reader else ""

    def _decide_and_log(
        self, requests: Sequence[contract.DecisionRequest], received: dt.datetime
    ) -> list[contract.DecisionAnswer]:
        keyring = self.keyring()
        answers: list[contract.DecisionAnswer] = []
        seen: dict[str, contract.DecisionAnswer] = {}
        with self.sessions() as session, session.begin():
            level = current_threat_level(session, self.site)
            occupancy = current_occupancy(session)
            for request in requests:
                earlier = seen.get(request.nonce) or self._earlier(session, request)
                if earlier is not None:
                    answers.append(earlier)
                    continue
                answer = self._decide_one(session, keyring, request, level, occupancy, received)
                seen[request.nonce] = answer
                answers.append(answer)
        # Committed: only now may the answers leave.
        for a in answers:
            log.info(
                "decision reader=%s gate=%s nonce=%s allow=%s reason=%s", a.reader, a.gate, a.nonce, a.allow, a.reason
            )
        return answers

    def _decide_one(
        self,
        session: Session,
        keyring: Keyring,
        request: contract.DecisionRequest,
        level: str,
        occupancy: dict[str, int],
        received: dt.datetime,
    ) -> contract.DecisionAnswer:
        verified = tokens.verify_token(request.token, keyring.badge_public, self.issuer, self.site.zone_for_badge_code)
        claims = verified if isinstance(verified, core.BadgeClaims) else None
        facts = facts_for(session, claims) if claims else core.UNKNOWN_FACTS
        now = self.clock()
        decision = core.decide(verified, facts, self.site, request.reader, level, now, occupancy)
        answer = self._sign(
            request.reader,
            self._gate_of(request.reader),
            request.nonce,
            decision,
            claims.badge_id if claims else "",
            now,
            keyring,
        )
        audit.append(
            session,
            audit.Entry(
                kind="decision",
                ref=request.nonce,
                at=now,
                recorded_at=received,
                reader=request.reader,
                gate=answer.gate,
                badge_id=claims.badge_id if claims else "",
                holder_id=claims.holder_id if claims else "",
                allow=decision.allow,
                reason=decision.reason.value,
                mode="online",
                detail=f"threat level {level}; {decision.detail}"[:2000],
                expires_ms=answer.expires_ms,
            ),
        )
        return answer

    def _earlier(self, session: Session, request: contract.DecisionRequest) -> contract.DecisionAnswer | None:
        row = session.scalar(select(AuditEntry).where(AuditEntry.ref == request.nonce, AuditEntry.kind == "decision"))
        if row is None:
            return None
        if row.reader != request.reader:
            # A nonce is the requester's: another reader re-using it gets a denial that is not logged again.
            decision = core.Decision(False, core.Reason.NONCE_REUSED)
            return self._sign(request.reader, self._gate_of(request.reader), request.nonce, decision, "", self.clock())
        return contract.sign_answer(
            contract.DecisionAnswer(
                reader=row.reader,
                gate=row.gate,
                nonce=request.nonce,
                allow=bool(row.allow),
                reason=row.reason,
                badge=row.badge_id,
                decided_ms=int(row.at.timestamp() * 1000),
                expires_ms=row.expires_ms or 0,
                kid="",
            ),
            self.keyring().decision_signing,
        )

    def _sign(
        self,
        reader: str,
        gate: str,
        nonce: str,
        decision: core.Decision,
        badge_id: str,
        now: dt.datetime,
        keyring: Keyring | None = None,
    ) -> contract.DecisionAnswer:
        now_ms = int(audit.to_ms(now).timestamp() * 1000)
        return contract.sign_answer(
            contract.DecisionAnswer(
                reader=reader,
                gate=gate,
                nonce=nonce,
                allow=decision.allow,
                reason=decision.reason.value,
                badge=badge_id,
                decided_ms=now_ms,
                expires_ms=now_ms + contract.ANSWER_TTL_MS,
                kid="",
            ),
            (keyring or self.keyring()).decision_signing,
        )
