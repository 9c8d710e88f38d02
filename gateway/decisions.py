"""The decision service: one request in, one audited and signed answer out.

Order matters: verify the token, gather facts, decide with the pure core, append the audit row and commit,
and only then sign the answer. A decision that cannot be logged is answered as a denial (`not_logged`).
A repeated nonce gets the answer recorded the first time, and no second row.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway import audit, contract, core, tokens
from gateway.db.models import AuditEntry, Badge, Holder
from gateway.instance import Keyring
from gateway.site import Site

log = logging.getLogger(__name__)


def facts_for(session: Session, claims: core.BadgeClaims) -> core.HolderFacts:
    badge = session.get(Badge, claims.badge_id)
    holder = session.get(Holder, claims.holder_id)
    known = badge is not None and badge.holder_id == claims.holder_id
    return core.HolderFacts(
        badge_known=known,
        badge_revoked=bool(badge is not None and badge.revocation is not None),
        holder_status=holder.status if holder is not None else None,
    )


@dataclass
class DecisionService:
    site: Site
    keyring: Keyring
    issuer: str
    sessions: sessionmaker[Session]
    clock: Callable[[], dt.datetime]
    threat_level: Callable[[], str]

    def answer(self, request: contract.DecisionRequest) -> contract.DecisionAnswer:
        received = self.clock()
        try:
            return self._decide_and_log(request, received)
        except SQLAlchemyError as exc:
            log.error("decision for nonce %s not logged, denying: %s", request.nonce, exc)
            gate = self._gate_of(request.reader)
            return self._sign(
                request.reader,
                gate,
                request.nonce,
                core.Decision(False, core.Reason.NOT_LOGGED),
                "",
                received,
            )

    def _gate_of(self, reader_code: str) -> str:
        reader = self.site.readers.get(reader_code)
        return reader.gate if reader else ""

    def _decide_and_log(
        self, request: contract.DecisionRequest, received: dt.datetime
    ) -> contract.DecisionAnswer:
        with self.sessions() as session, session.begin():
            earlier = self._earlier(session, request)
            if earlier is not None:
                return earlier
            verified = tokens.verify_token(request.token, self.keyring.badge_public, self.issuer)
            facts = (
                facts_for(session, verified) if isinstance(verified, core.BadgeClaims) else core.UNKNOWN_FACTS
            )
            now = self.clock()
            decision = core.decide(verified, facts, self.site, request.reader, self.threat_level(), now)
            badge_id = verified.badge_id if isinstance(verified, core.BadgeClaims) else ""
            holder_id = verified.holder_id if isinstance(verified, core.BadgeClaims) else ""
            answer = self._sign(
                request.reader, self._gate_of(request.reader), request.nonce, decision, badge_id, now
            )
            try:
                audit.append(
                    session,
                    audit.Entry(
                        kind="decision",
                        ref=request.nonce,
                        at=now,
                        recorded_at=received,
                        reader=request.reader,
                        gate=answer.gate,
                        badge_id=badge_id,
                        holder_id=holder_id,
                        allow=decision.allow,
                        reason=decision.reason.value,
                        mode="online",
                        detail=decision.detail[:2000],
                        expires_ms=answer.expires_ms,
                    ),
                )
            except IntegrityError:
                # Another worker logged the same nonce first: answer what it answered.
                session.rollback()
                with self.sessions() as again:
                    earlier = self._earlier(again, request)
                if earlier is None:
                    raise
                return earlier
        # Committed: only now may the answer leave.
        log.info(
            "decision reader=%s gate=%s nonce=%s allow=%s reason=%s",
            answer.reader,
            answer.gate,
            answer.nonce,
            answer.allow,
            answer.reason,
        )
        return answer

    def _earlier(self, session: Session, request: contract.DecisionRequest) -> contract.DecisionAnswer | None:
        row = session.scalar(
            select(AuditEntry).where(AuditEntry.ref == request.nonce, AuditEntry.kind == "decision")
        )
        if row is None:
            return None
        if row.reader != request.reader:
            # A nonce is the requester's: another reader re-using it gets a denial that is not logged again.
            return self._sign(
                request.reader,
                self._gate_of(request.reader),
                request.nonce,
                core.Decision(False, core.Reason.NONCE_REUSED),
                "",
                self.clock(),
            )
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
            self.keyring.decision_signing,
        )

    def _sign(
        self, reader: str, gate: str, nonce: str, decision: core.Decision, badge_id: str, now: dt.datetime
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
            self.keyring.decision_signing,
        )
