"""The reader agent: frames in, one decision per badge presentation, the turnstile driven through the bridge."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gateway import contract
from gateway.core import Reason
from gateway.tokens import BADGE_TYP
from readers.offline import OfflineOperation

log = logging.getLogger(__name__)


class Decoder(Protocol):
    def decode(self, gray: np.ndarray) -> list[str]: ...


class Gateway(Protocol):
    def ask(self, token: str, timeout_s: float) -> contract.DecisionAnswer | None: ...

    def forward_to_bridge(self, answer: contract.DecisionAnswer | contract.OfflineAnswer) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What the gate did for one badge presentation."""

    token: str
    allow: bool
    reason: str
    badge: str
    nonce: str
    mode: str = "online"  # "offline": decided by the reader itself, by its gate's offline policy


def looks_like_badge(text: str) -> bool:
    """Cheap check that a QR holds one of our badge tokens (typ 'badge'); proof comes from the gateway."""
    parts = text.split(".")
    if len(parts) != 3 or not all(parts) or len(text) > 1024:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and header.get("typ") == BADGE_TYP


class ReaderAgent:
    def __init__(
        self,
        reader: str,
        decoder: Decoder,
        link: Gateway,
        to_gray: Callable[[np.ndarray], np.ndarray],
        clock_s: Callable[[], float],
        on_outcome: Callable[[Outcome], None] = lambda _o: None,
        answer_timeout_s: float = 1.5,
        hold_s: float = 2.0,
        offline: OfflineOperation | None = None,
    ) -> None:
        self.reader = reader
        self.decoder = decoder
        self.link = link
        self.to_gray = to_gray
        self.clock_s = clock_s
        self.on_outcome = on_outcome
        self.answer_timeout_s = answer_timeout_s
        self.hold_s = hold_s  # a badge unseen this long counts as a new presentation when it comes back
        self.offline = offline  # None: no offline operation, a missing answer is a plain denial
        self._last_seen: dict[str, float] = {}
        self._ignored: set[str] = set()
        # Counters for the status heartbeat (readers.gateway_link.Counters).
        self.frames = 0
        self.decodes = 0
        self.decisions = 0

    @property
    def offline_queue(self) -> int:
        """Decisions taken offline and not yet acknowledged by the gateway (kept in the local store)."""
        return self.offline.queued if self.offline is not None else 0

    @property
    def mode(self) -> str:
        """"offline" while the reader decides by its gate's offline policy, else "online"."""
        return self.offline.mode if self.offline is not None else "online"

    def run(self, frames: Iterable[np.ndarray]) -> None:
        for frame in frames:
            self.process(frame)

    def process(self, frame: np.ndarray) -> list[Outcome]:
        self.frames += 1
        texts = self.decoder.decode(self.to_gray(frame))
        now = self.clock_s()
        outcomes = []
        for text in texts:
            self.decodes += 1
            if not looks_like_badge(text):
                if text not in self._ignored:
                    self._ignored.add(text)
                    log.info("reader %s: QR code that is not a badge ignored (%.24r...)", self.reader, text)
                continue
            last = self._last_seen.get(text)
            self._last_seen[text] = now
            if last is not None and now - last <= self.hold_s:
                continue  # the same badge still held in view: already decided
            outcomes.append(self._decide(text))
        self._forget(now)
        return outcomes

    def _forget(self, now: float) -> None:
        if len(self._last_seen) > 64:
            self._last_seen = {t: s for t, s in self._last_seen.items() if now - s <= self.hold_s}

    def _decide(self, token: str) -> Outcome:
        self.decisions += 1
        offline = self.offline
        # Once offline, decide at once: the uploads' acknowledgements tell when the gateway is back.
        answer = None if offline is not None and offline.offline else self.link.ask(token, self.answer_timeout_s)
        if answer is not None:
            if offline is not None:
                offline.gateway_answered()
            self.link.forward_to_bridge(answer)
            outcome = Outcome(token, answer.allow, answer.reason, answer.badge, answer.nonce)
        elif offline is not None:
            result = offline.decide(token)
            if result.answer is not None:
                self.link.forward_to_bridge(result.answer)
            d = result.decision
            outcome = Outcome(token, d.allow, d.reason, d.badge, d.nonce, mode="offline")
            log.warning(
                "reader %s: offline decision (%s): %s %s badge=%s",
                self.reader,
                result.policy,
                "allow" if d.allow else "deny",
                d.reason,
                d.badge or "-",
            )
        else:
            outcome = Outcome(token, False, Reason.GATEWAY_UNREACHABLE.value, "", "")
            log.warning("reader %s: no genuine answer in %.1f s: deny", self.reader, self.answer_timeout_s)
        self.on_outcome(outcome)
        return outcome
