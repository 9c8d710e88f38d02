"""The guard's post at one reader: who is on duty, the last decision with the holder's card, look-ups, manual and
forced decisions. No HTTP here (readers.gate_page_http serves it); everything personal comes from the gateway.

One guard at a time holds the post, from the browser they logged in with. Their session ends when they leave the
post, when they stay idle `idle_s`, or when the gateway no longer knows it. A granted manual or forced decision
opens the turnstile the way a scan does: its signed answer is checked here and forwarded to the gate's bridge,
which checks it again.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from gateway import contract
from readers.agent import Decoder, Outcome, looks_like_badge

log = logging.getLogger(__name__)

IDLE_S = 300.0  # a guard who has not touched the page for five minutes has left the post
SCAN_WINDOW_S = 30.0  # how long the camera waits for the guard's own badge after "scan my badge"
ERRORS = {  # the gateway's error codes, in the guard's words
    "login_refused": "Badge or PIN not accepted.",
    "guard_locked": "Too many wrong PINs: this guard is locked out for a while. Ask a lead.",
    "no_guard_session": "Your session ended: log in again.",
    "no_override_right": "You do not have the right to force a grant.",
    "force_reason_missing": "Choose a reason (and explain 'other').",
    "unknown_holder": "This holder is not on record.",
    "no_holder": "No holder found for this decision.",
    "nonce_reused": "This request was already answered.",
    "unknown_reader": "The gateway does not know this reader.",
    "no_answer": "The gateway did not answer: try again, or call the lead.",
    "not_genuine": "The gateway's answer could not be verified: the gate stays shut.",
}


class GuardAsker(Protocol):
    def ask(self, op: str, **fields: str) -> contract.GuardAnswer | None: ...


@dataclass(frozen=True)
class Card:
    """A holder as the gateway describes them to the guard."""

    id: str
    name: str
    role: str
    organisation: str
    status: str
    photo: bytes  # JPEG, or b"" when the holder has no photo

    @property
    def photo_b64(self) -> str:
        return base64.b64encode(self.photo).decode("ascii")

    @classmethod
    def from_body(cls, raw: Any) -> Card | None:
        if not isinstance(raw, Mapping):
            return None
        text = {k: str(raw.get(k, ""))[:200] for k in ("id", "name", "role", "organisation", "status")}
        try:
            photo = base64.b64decode(str(raw.get("photo", "")), validate=True)
        except (binascii.Error, ValueError):
            photo = b""
        return cls(**text, photo=photo if photo.startswith(b"\xff\xd8") else b"")


@dataclass
class Decided:
    """A decision at this gate as the guard sees it: scanned, manual or forced."""

    allow: bool
    reason: str
    badge: str
    nonce: str
    mode: str  # scan, manual, forced
    at: str  # HH:MM:SS, the reader's clock
    card: Card | None = None
    rules: str = ""  # for a manual decision: what the rules said


@dataclass
class OnDuty:
    holder: str
    name: str
    can_override: bool
    session: str  # the gateway's session token
    browser: str  # the page session that logged in
    last_active: float


@dataclass
class Result:
    """What one manual request came to, for the page."""

    error: str = ""
    decided: Decided | None = None
    holders: list[dict[str, Any]] = field(default_factory=list)
    more: bool = False
    card: Card | None = None


class GatePost:
    def __init__(
        self,
        reader: str,
        gate: str,
        link: GuardAsker,
        forward: Callable[[contract.DecisionAnswer], None],
        decision_keys: contract.DecisionKeys,
        clock_s: Callable[[], float],
        clock_ms: Callable[[], int],
        idle_s: float = IDLE_S,
    ) -> None:
        self.reader = reader
        self.gate = gate
        self.link = link
        self.forward = forward
        self.keys = decision_keys
        self.clock_s = clock_s
        self.clock_ms = clock_ms
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._duty: OnDuty | None = None
        self.last: Decided | None = None
        self._scan_armed_until = 0.0
        self._scanned_badge = ""

    # --- who is on duty --------------------------------------------------------------------------------

    def guard_for(self, browser: str) -> OnDuty | None:
        """The guard on duty if `browser` is theirs; touching the page keeps them on duty."""
        self.expire_idle()
        with self._lock:
            duty = self._duty
            if duty is None or duty.browser != browser:
                return None
            duty.last_active = self.clock_s()
            return duty

    def expire_idle(self) -> None:
        with self._lock:
            duty = self._duty
            if duty is None or self.clock_s() - duty.last_active < self.idle_s:
                return
            self._duty = None
        log.info("reader %s: guard %s idle for %.0f s: session ended", self.reader, duty.holder, self.idle_s)
        self.link.ask("logout", session=duty.session, note="idle timeout at the gate page")

    def login(self, browser: str, badge: str, pin: str) -> str:
        """Log a guard in with their badge (typed id, or the one the camera just read when `badge` is "") and
        PIN; returns "" or an error message for the page."""
        if not badge:
            with self._lock:
                badge, self._scanned_badge = self._scanned_badge, ""
        if not badge or not pin.isdigit() or not 4 <= len(pin) <= 12 or len(badge) > contract.MAX_TOKEN_CHARS:
            return ERRORS["login_refused"]
        answer = self.link.ask("login", badge=badge, pin=pin)
        if answer is None:
            return ERRORS["no_answer"]
        if not answer.ok:
            return ERRORS.get(answer.error, answer.error)
        guard = answer.body.get("guard", {})
        session = answer.body.get("session")
        if not isinstance(guard, Mapping) or not isinstance(session, str):
            return ERRORS["not_genuine"]
        duty = OnDuty(
            holder=str(guard.get("id", "")),
            name=str(guard.get("name", ""))[:200],
            can_override=guard.get("can_override") is True,
            session=session,
            browser=browser,
            last_active=self.clock_s(),
        )
        with self._lock:
            previous, self._duty = self._duty, duty
        if previous is not None:
            self.link.ask("logout", session=previous.session, note="another guard took the post")
        log.info("reader %s: guard %s on duty", self.reader, duty.holder)
        return ""

    def leave(self, browser: str) -> None:
        with self._lock:
            duty = self._duty
            if duty is None or duty.browser != browser:
                return
            self._duty = None
        self.link.ask("logout", session=duty.session, note="left the post")

    # --- the guard's own badge through the camera --------------------------------------------------------

    def arm_badge_scan(self) -> None:
        with self._lock:
            self._scan_armed_until = self.clock_s() + SCAN_WINDOW_S
            self._scanned_badge = ""

    @property
    def scanned_badge(self) -> bool:
        with self._lock:
            return bool(self._scanned_badge)

    @property
    def scan_armed(self) -> bool:
        with self._lock:
            return self.clock_s() < self._scan_armed_until

    def take_guard_badge(self, texts: list[str]) -> list[str]:
        """While a guard waits to log in by camera, their badge is theirs to log in with, not a passage."""
        with self._lock:
            if self.clock_s() >= self._scan_armed_until:
                return texts
            for text in texts:
                if looks_like_badge(text):
                    self._scanned_badge, self._scan_armed_until = text, 0.0
                    return [t for t in texts if t != text]
        return texts

    # --- requests for the guard on duty --------------------------------------------------------------------

    def _ask(self, duty: OnDuty, op: str, **fields: str) -> contract.GuardAnswer | str:
        answer = self.link.ask(op, session=duty.session, **fields)
        if answer is None:
            return ERRORS["no_answer"]
        if not answer.ok:
            if answer.error == "no_guard_session":
                with self._lock:
                    if self._duty is duty:
                        self._duty = None
            return ERRORS.get(answer.error, answer.error)
        return answer

    def lookup(self, duty: OnDuty, query: str) -> Result:
        answer = self._ask(duty, "lookup", query=query.strip()[:80])
        if isinstance(answer, str):
            return Result(error=answer)
        holders = answer.body.get("holders", [])
        rows = [h for h in holders if isinstance(h, Mapping)] if isinstance(holders, list) else []
        return Result(holders=[dict(h) for h in rows], more=answer.body.get("more") is True)

    def card(self, duty: OnDuty, holder: str) -> Result:
        answer = self._ask(duty, "card", holder=holder)
        if isinstance(answer, str):
            return Result(error=answer)
        return Result(card=Card.from_body(answer.body.get("holder")))

    def decide(self, duty: OnDuty, holder: str, why: str = "", note: str = "") -> Result:
        """A manual decision on `holder` (forced when `why` is given); a genuine grant opens the turnstile."""
        forcing = bool(why)
        fields = {"holder": holder, "why": why, "note": note.strip()[:300]} if forcing else {"holder": holder}
        answer = self._ask(duty, "force" if forcing else "decide", **fields)
        if isinstance(answer, str):
            return Result(error=answer)
        try:
            decision = contract.decision_in(answer.body)
        except contract.ContractError:
            decision = None
        if decision is None or decision.nonce != answer.nonce:
            return Result(error=ERRORS["not_genuine"])
        problem = contract.answer_problem(
            decision, self.keys, reader=self.reader, nonce=answer.nonce, gate=self.gate, now_ms=self.clock_ms()
        )
        if problem is not None:
            log.warning("reader %s: manual decision not acted on: %s", self.reader, problem)
            return Result(error=ERRORS["not_genuine"])
        self.forward(decision)
        rules = answer.body.get("rules", {})
        decided = Decided(
            allow=decision.allow,
            reason=decision.reason,
            badge=decision.badge,
            nonce=decision.nonce,
            mode=str(answer.body.get("mode", "manual")),
            at=self._stamp(),
            card=Card.from_body(answer.body.get("holder")),
            rules=f"{rules.get('reason', '')}: {rules.get('detail', '')}" if isinstance(rules, Mapping) else "",
        )
        with self._lock:
            self.last = decided
        return Result(decided=decided)

    # --- scans ---------------------------------------------------------------------------------------------

    def on_outcome(self, outcome: Outcome) -> None:
        """A scan was decided: show it, and fetch whose it was for the guard on duty (off the camera's thread)."""
        decided = Decided(outcome.allow, outcome.reason, outcome.badge, outcome.nonce, "scan", self._stamp())
        with self._lock:
            self.last = decided
            duty = self._duty
        if duty is not None and outcome.nonce:
            threading.Thread(target=self._fetch_card, args=(duty, decided), daemon=True).start()

    def _fetch_card(self, duty: OnDuty, decided: Decided) -> None:
        answer = self.link.ask("card", session=duty.session, ref=decided.nonce)
        if answer is not None and answer.ok:
            decided.card = Card.from_body(answer.body.get("holder"))

    def _stamp(self) -> str:
        return dt.datetime.fromtimestamp(self.clock_ms() / 1000, dt.UTC).strftime("%H:%M:%S")


class GuardBadgeTap:
    """Wraps the reader's decoder so that a guard logging in by camera is not asked a passage for."""

    def __init__(self, decoder: Decoder, post: GatePost) -> None:
        self.decoder = decoder
        self.post = post

    def decode(self, gray: np.ndarray) -> list[str]:
        return self.post.take_guard_badge(self.decoder.decode(gray))
