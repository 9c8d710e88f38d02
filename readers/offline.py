"""The reader's offline operation: deciding by the gate's offline policy, and uploading what it decided.

When the gateway gives no genuine answer in time, the reader switches to offline mode (log line, status
message, outcome marker) and decides on its own:

- `deny_all`: refuse, reason `gateway_unreachable`; the turnstile is not told (it stays shut);
- `verify_locally`: the pure decision core on what the badge token proves (signature with the accepted
  badge keys, issuer, validity, zones) and what the gateway published (revocations, suspended holders,
  threat level, site rules), with local anti-passback; the answer is signed with the reader's offline key
  and forwarded to the bridge. Facts the reader cannot hold (qualifications, roles, shifts, occupancy) are
  unknown: zones that require a qualification or restrict roles are refused offline.

Every offline decision is committed to the local store before anything acts on it, then uploaded until the
gateway acknowledges it (only then is it deleted). The first acknowledgement, or any genuine answer, means
the gateway is back: the reader decides online again.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import contract, core, tokens
from gateway.site import OUTSIDE
from readers.offline_site import Knowledge, SiteKnowledge
from readers.offline_store import OfflineStore

log = logging.getLogger(__name__)

UPLOAD_RETRY_S = 2.0  # no acknowledgement by then: upload again (the gateway drops repeats by nonce)
UPLOAD_BATCH = 20  # decisions in flight at once


class Uplink(Protocol):
    def upload(self, decision: contract.OfflineDecision) -> bool: ...


@dataclass(frozen=True)
class OfflineResult:
    decision: contract.OfflineDecision  # what is stored and will be uploaded
    answer: contract.OfflineAnswer | None  # for the bridge (verify_locally only)
    policy: str


class OfflineOperation:
    def __init__(
        self,
        reader: str,
        store: OfflineStore,
        knowledge: SiteKnowledge,
        signing_key: Ed25519PrivateKey | None,
        clock_ms: Callable[[], int],
        on_mode: Callable[[str], None] = lambda _mode: None,
        upload_retry_s: float = UPLOAD_RETRY_S,
    ) -> None:
        self.reader = reader
        self.store = store
        self.knowledge = knowledge
        self.signing_key = signing_key
        self.clock_ms = clock_ms
        self.on_mode = on_mode
        self.upload_retry_s = upload_retry_s
        self.mode = "online"
        self.uploaded = 0  # acknowledged by the gateway since start
        self._uplink: Uplink | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    @property
    def offline(self) -> bool:
        return self.mode == "offline"

    @property
    def queued(self) -> int:
        return self.store.queued()

    # --- deciding ----------------------------------------------------------------------------------

    def policy(self, known: Knowledge) -> str:
        reader = known.site.readers.get(self.reader)
        gate = known.site.gates.get(reader.gate) if reader is not None else None
        return gate.offline_policy if gate is not None else "deny_all"

    def decide(self, token: str) -> OfflineResult:
        """Decide without the gateway, store the decision (committed), and switch to offline mode."""
        known = self.knowledge.now
        now_ms = self.clock_ms()
        now = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC)
        policy = self.policy(known)
        if policy == "verify_locally" and self.signing_key is None:
            log.error("reader %s: policy verify_locally but no offline key: denying as deny_all", self.reader)
            policy = "deny_all"
        verified = tokens.verify_token(token, known.badge_keys, known.issuer, known.site.zone_for_badge_code)
        claims = verified if isinstance(verified, core.BadgeClaims) else None
        if policy == "verify_locally":
            decision = core.decide(verified, self._facts(known, claims), known.site, self.reader, known.level, now)
        else:
            decision = core.Decision(False, core.Reason.GATEWAY_UNREACHABLE, "the gateway did not answer")
        reader = known.site.readers.get(self.reader)
        gate = reader.gate if reader is not None else ""
        record = contract.OfflineDecision(
            reader=self.reader,
            gate=gate,
            nonce=secrets.token_hex(16),
            allow=decision.allow,
            reason=decision.reason.value,
            badge=claims.badge_id if claims else "",
            holder=claims.holder_id if claims else "",
            decided_ms=now_ms,
            detail=f"offline policy {policy}; threat level {known.level}; {decision.detail}"[
                : contract.MAX_OFFLINE_DETAIL_CHARS
            ],
        )
        if decision.allow and claims is not None and reader is not None:
            zone = known.site.target_zone(reader)
            if zone != OUTSIDE:
                self.store.record_entry(claims.holder_id, zone, now_ms)
        self.store.add_decision(record)  # committed before the turnstile hears of it
        answer = None
        if policy == "verify_locally" and self.signing_key is not None and gate:
            answer = contract.sign_offline_answer(
                contract.OfflineAnswer(
                    reader=self.reader,
                    gate=gate,
                    nonce=record.nonce,
                    allow=record.allow,
                    reason=record.reason,
                    badge=record.badge,
                    decided_ms=now_ms,
                    expires_ms=now_ms + contract.ANSWER_TTL_MS,
                    kid="",
                ),
                self.signing_key,
            )
        self._switch("offline", policy)
        with self._cond:
            self._cond.notify_all()
        return OfflineResult(record, answer, policy)

    def _facts(self, known: Knowledge, claims: core.BadgeClaims | None) -> core.HolderFacts:
        if claims is None:
            return core.UNKNOWN_FACTS
        entry = self.store.entry_of(claims.holder_id)
        whereabouts = core.Whereabouts(entry[0], dt.datetime.fromtimestamp(entry[1] / 1000, dt.UTC)) if entry else None
        return core.HolderFacts(
            # A genuine signature by an accepted key is all the reader can know of the issuance.
            badge_known=True,
            badge_revoked=claims.badge_id in known.revoked_badges,
            holder_status="suspended" if claims.holder_id in known.suspended_holders else "active",
            whereabouts=whereabouts,
        )

    # --- mode --------------------------------------------------------------------------------------

    def gateway_answered(self) -> None:
        """A genuine answer came: the gateway is there."""
        self._switch("online", "")

    def _switch(self, mode: str, policy: str) -> None:
        with self._cond:
            if mode == self.mode:
                return
            self.mode = mode
        if mode == "offline":
            log.warning(
                "reader %s: OFFLINE: the gateway does not answer; deciding by the gate's offline policy (%s)",
                self.reader,
                policy,
            )
        else:
            self.store.forget_entries()
            log.warning(
                "reader %s: ONLINE again: the gateway answers; %d offline decision(s) left to upload",
                self.reader,
                self.queued,
            )
        self.on_mode(mode)

    # --- uploading ---------------------------------------------------------------------------------

    def acknowledged(self, payload: bytes) -> None:
        """An acknowledgement from the gateway (on this reader's ack topic): forget that decision."""
        try:
            ack = contract.OfflineDecisionAck.from_json(payload)
        except contract.ContractError as exc:
            log.warning("reader %s: malformed offline ack dropped: %s", self.reader, exc)
            return
        if ack.reader != self.reader:
            log.warning("reader %s: offline ack for reader %s dropped", self.reader, ack.reader)
            return
        if self.store.acknowledged(ack.nonce):
            self.uploaded += 1
            log.info("reader %s: offline decision %s is in the gateway's audit", self.reader, ack.nonce)
        self._switch("online", "")
        with self._cond:
            self._cond.notify_all()

    def start(self, uplink: Uplink) -> None:
        self._uplink = uplink
        self._stop = False
        self._thread = threading.Thread(target=self._upload_loop, name=f"offline-upload-{self.reader}", daemon=True)
        self._thread.start()

    def drain(self, timeout_s: float) -> bool:
        """Wait until every offline decision is acknowledged, or `timeout_s`; True when none is left."""
        with self._cond:
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self.store.queued() == 0, timeout_s)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _done(self, sent: list[contract.OfflineDecision]) -> bool:
        """Stopping, or every decision of `sent` acknowledged (the lock is held)."""
        return self._stop or not {d.nonce for d in sent} & {d.nonce for d in self.store.pending(UPLOAD_BATCH)}

    def _upload_loop(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
            try:
                batch = self.store.pending(UPLOAD_BATCH)
                if batch and self._uplink is not None:
                    for decision in batch:
                        self._uplink.upload(decision)
            except Exception:  # the store or the link failing once must not end the uploads
                log.exception("reader %s: offline upload failed; retrying", self.reader)
                batch = []
            with self._cond:
                if self._stop:
                    return
                if batch:
                    # Until this batch is acknowledged (an ack wakes us) or the retry time is up.
                    self._cond.wait_for(functools.partial(self._done, batch), self.upload_retry_s)
                else:
                    self._cond.wait(self.upload_retry_s)
