"""The decision service: requests in, audited and signed answers out.

Order matters: verify the token, gather facts, decide with the pure core and sign, append the audit entries and
commit, and only then release the answers. Requests that arrive together are decided together and their entries
committed at once (group commit): the answers wait for that commit, never the other way round.
A batch that cannot be logged is answered with denials (`not_logged`). A repeated nonce gets the answer
recorded the first time, and no second entry.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway import audit, contract, core
from gateway.badge_cache import VerifiedBadges
from gateway.db.rawsql import Query, Raw, autocommitting, transaction
from gateway.instance import Keyring
from gateway.jsonlog import scan
from gateway.site import Site, TimeWindow

log = logging.getLogger(__name__)

THREAT_LEVEL_KEY = "threat_level"


THREAT_LEVEL_QUERY: Query = ("SELECT value FROM site_state WHERE key = ?", (THREAT_LEVEL_KEY,))
OCCUPANCY_QUERY: Query = ("SELECT zone, count FROM occupancy", ())


def threat_level_from(rows: Sequence[tuple[Any, ...]], site: Site) -> str:
    return rows[0][0] if rows and rows[0][0] in site.threat_levels else site.default_threat_level


def current_threat_level(db: Session | Raw, site: Site) -> str:
    return threat_level_from(Raw.of(db).rows(*THREAT_LEVEL_QUERY), site)


def current_occupancy(db: Session | Raw) -> dict[str, int]:
    return dict(Raw.of(db).rows(*OCCUPANCY_QUERY))


def facts_queries(raw: Raw, claims: Sequence[core.BadgeClaims]) -> list[Query]:
    """The four set-based statements that read the facts of a batch's badges (none for no badge)."""
    if not claims:
        return []
    in_badges, badge_ids = raw.one_of("b.id", sorted({c.badge_id for c in claims}))
    holder_ids = sorted({c.holder_id for c in claims})
    in_holders, holder_params = raw.one_of("h.id", holder_ids)
    of_holders, _ = raw.one_of("holder_id", holder_ids)  # the same parameters, for a bare column name
    return [
        (
            "SELECT b.id, b.holder_id, r.id AS revocation FROM badges b LEFT JOIN revocations r ON r.badge_id = b.id "
            f"WHERE {in_badges}",
            badge_ids,
        ),
        (
            "SELECT h.id, h.status, h.role, p.zone, p.since FROM holders h "
            f"LEFT JOIN positions p ON p.holder_id = h.id WHERE {in_holders}",
            holder_params,
        ),
        (f"SELECT holder_id, kind, expires_at FROM qualifications WHERE {of_holders}", holder_params),
        (f"SELECT holder_id, days, starts, ends FROM shifts WHERE {of_holders} ORDER BY id", holder_params),
    ]


def facts_from(
    raw: Raw, results: Sequence[Sequence[tuple[Any, ...]]], claims: Sequence[core.BadgeClaims]
) -> dict[str, core.HolderFacts]:
    """Facts for every badge of a batch, keyed by badge id, from the rows of `facts_queries`."""
    if not claims:
        return {}
    badges, holder_rows, qualification_rows, shift_rows = results
    on_record = {badge: (holder, revocation is not None) for badge, holder, revocation in badges}
    holders = {row[0]: row for row in holder_rows}
    qualifications: dict[str, dict[str, dt.datetime | None]] = {}
    for holder_id, kind, expires in qualification_rows:
        qualifications.setdefault(holder_id, {})[kind] = raw.time_out(expires)
    shifts: dict[str, list[TimeWindow]] = {}
    for holder_id, days, starts, ends in shift_rows:
        shifts.setdefault(holder_id, []).append(TimeWindow.weekly(days, starts, ends))
    out: dict[str, core.HolderFacts] = {}
    for c in claims:
        owner, revoked = on_record.get(c.badge_id, (None, False))
        holder = holders.get(c.holder_id)
        out[c.badge_id] = core.HolderFacts(
            badge_known=owner == c.holder_id,
            badge_revoked=revoked,
            holder_status=holder[1] if holder else None,
            role=holder[2] if holder else "",
            qualifications=qualifications.get(c.holder_id, {}),
            shifts=tuple(shifts.get(c.holder_id, ())),
            whereabouts=(
                core.Whereabouts(holder[3], raw.when(holder[4])) if holder and holder[3] is not None else None
            ),
        )
    return out


def facts_for_many(db: Session | Raw, claims: Sequence[core.BadgeClaims]) -> dict[str, core.HolderFacts]:
    raw = Raw.of(db)
    return facts_from(raw, raw.rows_combined(facts_queries(raw, claims)), claims)


def facts_for(db: Session | Raw, claims: core.BadgeClaims) -> core.HolderFacts:
    return facts_for_many(db, [claims])[claims.badge_id]


def batch_reads(raw: Raw, nonces: Sequence[str], claims: Sequence[core.BadgeClaims]) -> list[Query]:
    """Everything a batch's decisions read, in the order `DecisionService._decide_batch` takes the rows."""
    return [earlier_query(raw, nonces), THREAT_LEVEL_QUERY, OCCUPANCY_QUERY, *facts_queries(raw, claims)]


def earlier_query(raw: Raw, nonces: Sequence[str]) -> Query:
    """What the audit holds for a batch's nonces. By `ref` alone, the unique index: with `kind = 'decision'` in
    the WHERE too, SQLite walked the (kind, seq) index through every decision ever logged, per batch."""
    condition, params = raw.one_of("ref", nonces)
    return (
        f"SELECT kind, ref, reader, gate, allow, reason, badge_id, at, expires_ms FROM audit_entries WHERE {condition}",
        params,
    )


@dataclass(frozen=True)
class _Recorded:
    """What the audit holds of a decision already taken for a nonce."""

    reader: str
    gate: str
    allow: bool
    reason: str
    badge_id: str
    at: dt.datetime
    expires_ms: int | None


@dataclass
class DecisionService:
    site: Site
    keyring: Callable[[], Keyring]  # re-read when keys rotate
    issuer: str
    sessions: sessionmaker[Session]
    clock: Callable[[], dt.datetime]
    badges: VerifiedBadges = field(default_factory=VerifiedBadges)  # tokens already checked (gateway/badge_cache.py)

    @property
    def engine(self) -> Engine:
        bind: Engine = self.sessions.kw["bind"]
        return bind

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
        verified = [
            self.badges.verify(r.token, keyring.badge_public, self.issuer, self.site.zone_for_badge_code)
            for r in requests
        ]
        claims = [v for v in verified if isinstance(v, core.BadgeClaims)]
        nonces = sorted({r.nonce for r in requests})
        if self.engine.dialect.name == "postgresql":
            # Two statements, each committed on its own: every read and the chain's head (read without its lock),
            # then the entries, written by audit_append(), which locks the chain, checks the head and commits.
            # Another worker's entries in between cost a second try of the write, not of the decisions.
            with autocommitting(self.engine) as raw:
                *results, head_rows = raw.rows_combined([*batch_reads(raw, nonces, claims), audit.HEAD])
                answers, entries = self._decide_batch(raw, requests, verified, claims, results, keyring, received)
                if entries:
                    audit.append_after(raw, audit.head_from(head_rows), entries)
        else:
            # SQLite: BEGIN IMMEDIATE holds its only write lock from the first read to the commit.
            with transaction(self.engine) as raw:
                *results, head_rows = raw.rows_combined([*batch_reads(raw, nonces, claims), audit.HEAD])
                answers, entries = self._decide_batch(raw, requests, verified, claims, results, keyring, received)
                audit.insert(raw, audit.head_from(head_rows), entries)
        # Committed: only now may the answers leave.
        for a in answers:
            # The gate, reader and nonce go in as fields: the text format appends them, JSON carries them.
            log.info("decided %s %s", "allow" if a.allow else "deny", a.reason, extra=scan(a.gate, a.reader, a.nonce))
        return answers

    def _decide_batch(
        self,
        raw: Raw,
        requests: Sequence[contract.DecisionRequest],
        verified: Sequence[core.BadgeClaims | core.TokenProblem],
        claims: Sequence[core.BadgeClaims],
        results: Sequence[Sequence[tuple[Any, ...]]],
        keyring: Keyring,
        received: dt.datetime,
    ) -> tuple[list[contract.DecisionAnswer], list[audit.Entry]]:
        """The answers to a batch, and the audit entries of the decisions taken now, from the rows of its reads."""
        earlier_rows, level_rows, occupancy_rows, *fact_rows = results
        earlier = self._earlier_from(raw, earlier_rows, requests)
        level = threat_level_from(level_rows, self.site)
        occupancy: dict[str, int] = dict(occupancy_rows)
        facts = facts_from(raw, fact_rows, claims)
        now = self.clock()
        answers: list[contract.DecisionAnswer] = []
        entries: list[audit.Entry] = []
        decided: dict[str, contract.DecisionAnswer] = {}
        for request, token in zip(requests, verified, strict=True):
            answer = decided.get(request.nonce) or earlier.get(request.nonce)
            if answer is None:
                answer, entry = self._decide_one(request, token, facts, keyring, level, occupancy, now, received)
                decided[request.nonce] = answer
                entries.append(entry)
            answers.append(answer)
        return answers, entries

    def _decide_one(
        self,
        request: contract.DecisionRequest,
        token: core.BadgeClaims | core.TokenProblem,
        facts: dict[str, core.HolderFacts],
        keyring: Keyring,
        level: str,
        occupancy: dict[str, int],
        now: dt.datetime,
        received: dt.datetime,
    ) -> tuple[contract.DecisionAnswer, audit.Entry]:
        claims = token if isinstance(token, core.BadgeClaims) else None
        holder_facts = facts[claims.badge_id] if claims else core.UNKNOWN_FACTS
        decision = core.decide(token, holder_facts, self.site, request.reader, level, now, occupancy)
        answer = self._sign(
            request.reader,
            self._gate_of(request.reader),
            request.nonce,
            decision,
            claims.badge_id if claims else "",
            now,
            keyring,
        )
        entry = audit.Entry(
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
        )
        return answer, entry

    def _earlier_from(
        self, raw: Raw, rows: Sequence[tuple[Any, ...]], requests: Sequence[contract.DecisionRequest]
    ) -> dict[str, contract.DecisionAnswer]:
        """The answers already given to nonces of the batch (rows of `earlier_query`)."""
        by_nonce = {row[1]: row for row in rows if row[0] == "decision"}
        out = {}
        for request in requests:
            row = by_nonce.get(request.nonce)
            if row is not None:
                _kind, _ref, reader, gate, allow, reason, badge_id, at, expires_ms = row
                out[request.nonce] = self._replay(
                    request, _Recorded(reader, gate, bool(allow), reason, badge_id, raw.when(at), expires_ms)
                )
        return out

    def _replay(self, request: contract.DecisionRequest, row: _Recorded) -> contract.DecisionAnswer:
        """The answer to a nonce already decided: the recorded one, signed again; nothing is logged twice."""
        if row.reader != request.reader:
            # A nonce is the requester's: another reader re-using it gets a denial that is not logged again.
            decision = core.Decision(False, core.Reason.NONCE_REUSED)
            return self._sign(request.reader, self._gate_of(request.reader), request.nonce, decision, "", self.clock())
        return contract.sign_answer(
            contract.DecisionAnswer(
                reader=row.reader,
                gate=row.gate,
                nonce=request.nonce,
                allow=row.allow,
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
        key = (keyring or self.keyring()).decision_signing
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
                kid=contract.signing_key_id(key),
            ),
            key,
        )
