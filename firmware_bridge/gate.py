"""One gate as the bridge drives it: signed answers in, controller commands out, controller reports to events.

The gate trusts no message: it moves the relay only for an answer that is signed by a known decision key,
meant for this gate, forwarded for one of this gate's readers, unexpired, and never acted on before.
An offline answer (a reader's own, while the gateway is away) is accepted only when the gate's offline_policy
is verify_locally, signed by the offline key registered for that very reader of this gate, with the same
freshness and replay rules.

It also keeps the grants that opened the gate until a person passes: a passage carries the nonce of the
grant it used (see _passage_grant), and a grant with no passage within the gate's passage_timeout_s becomes
"grant_unused" (the gateway then gives the passage back). No MQTT here: events go to `emit`, answers come from
`handle_command`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from firmware_bridge import display
from firmware_bridge.controller import ControllerError, ControllerLink
from firmware_bridge.door import RELEASE_GRACE_S
from gateway import contract, jsonlog
from gateway.site import Gate, Site

log = logging.getLogger(__name__)

Clock = Callable[[], int]  # epoch milliseconds
Emit = Callable[[str, str], None]  # (event kind, nonce or "")
MAX_REMEMBERED_NONCES = 4096  # answers live 5 s: far more than one gate can see in that time
CONTROLLER_KINDS = ("controller_online", "controller_offline")


def epoch_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class CommandOutcome:
    """What the bridge did with one command message."""

    action: str  # "grant", "deny" or "ignored"
    nonce: str  # "" when the message could not be read
    detail: str  # why it was ignored, or what failed

    @property
    def acted(self) -> bool:
        return self.action != "ignored"


@dataclass
class _Grant:
    nonce: str
    open_until: float  # monotonic s: end of the relay pulse (plus grace), when the arm can still turn for it
    deadline: float  # monotonic s: no passage by then means the grant was not used


class GateDriver:
    """Drives the controller of `gate_code` (found on `link`) and turns its reports into events."""

    def __init__(
        self,
        site: Site,
        gate_code: str,
        link: ControllerLink,
        keys: contract.DecisionKeys,
        emit: Emit,
        *,
        clock: Clock = epoch_ms,
        monotonic: Callable[[], float] = time.monotonic,
        on_outcome: Callable[[CommandOutcome], None] | None = None,
        max_nonces: int = MAX_REMEMBERED_NONCES,
        reader_keys: contract.ReaderKeys | None = None,
    ) -> None:
        gate = site.gates.get(gate_code)
        if gate is None:
            raise ValueError(f"unknown gate {gate_code!r}")
        if gate.controller is None:
            raise ValueError(f"gate {gate_code!r} has no controller in the site file")
        if gate.controller.address not in link.addresses:
            raise ValueError(f"gate {gate_code!r}: controller address {gate.controller.address} is not on the link")
        if not keys:
            raise ValueError("at least one decision public key is needed")
        self.gate: Gate = gate
        self.address = gate.controller.address
        self._readers = frozenset(r.code for r in site.readers.values() if r.gate == gate.code)
        self._link = link
        self._keys = dict(keys)
        # Offline keys of this gate's readers only: another gate's reader can never open this one.
        self._reader_keys = {r: k for r, k in (reader_keys or {}).items() if r in self._readers}
        self._emit = emit
        self._clock = clock
        self._monotonic = monotonic
        self._on_outcome = on_outcome
        self._max_nonces = max_nonces
        self._lock = threading.Lock()
        self._used: dict[str, int] = {}  # nonce -> expires_ms: kept until the answer could no longer be valid
        self._grants: list[_Grant] = []  # oldest first
        self._controller_state = ""  # the last controller_online/offline reported

    # --- decisions in ------------------------------------------------------------------------------

    def handle_command(self, payload: bytes, *, retained: bool = False) -> CommandOutcome:
        """Check one command message and, if it is genuine and new, act on it."""
        outcome = self._decide_and_act(payload, retained)
        fields = jsonlog.scan(gate=self.gate.code, nonce=outcome.nonce)  # follow the scan in JSON logs
        if outcome.action == "ignored":
            log.warning(
                "gate %s: ignored answer %s: %s", self.gate.code, outcome.nonce or "-", outcome.detail, extra=fields
            )
        elif outcome.detail:
            log.error(
                "gate %s: %s %s failed: %s", self.gate.code, outcome.action, outcome.nonce, outcome.detail, extra=fields
            )
        else:
            log.info("gate %s: %s %s", self.gate.code, outcome.action, outcome.nonce, extra=fields)
        if self._on_outcome is not None:
            self._on_outcome(outcome)
        return outcome

    def _decide_and_act(self, payload: bytes, retained: bool) -> CommandOutcome:
        now = self._clock()
        answer: contract.DecisionAnswer | contract.OfflineAnswer
        try:
            answer = contract.DecisionAnswer.from_json(payload)
        except contract.ContractError as exc:
            try:
                answer = contract.OfflineAnswer.from_json(payload)
            except contract.ContractError:
                return CommandOutcome("ignored", "", f"malformed answer: {exc}")
        if retained:
            # A command is only meant for the moment it is sent. A retained one would be replayed to a
            # restarted bridge, whose memory of used nonces started empty.
            return CommandOutcome("ignored", answer.nonce, "retained message: commands are never stored")
        if isinstance(answer, contract.OfflineAnswer):
            if self.gate.offline_policy != "verify_locally":
                why = f"offline answer at a gate whose offline_policy is {self.gate.offline_policy}"
                return CommandOutcome("ignored", answer.nonce, why)
            problem = contract.offline_answer_problem(answer, self._reader_keys, gate=self.gate.code, now_ms=now)
        else:
            problem = contract.answer_problem(
                answer, self._keys, reader=None, nonce=None, gate=self.gate.code, now_ms=now
            )
        if problem is not None:
            return CommandOutcome("ignored", answer.nonce, problem)
        if answer.reader not in self._readers:
            return CommandOutcome("ignored", answer.nonce, f"reader {answer.reader!r} is not at gate {self.gate.code}")
        if answer.expires_ms - answer.decided_ms > contract.ANSWER_TTL_MS:
            # Also bounds how long a nonce must be remembered.
            return CommandOutcome("ignored", answer.nonce, "answer lives longer than the contract allows")
        with self._lock:
            self._used = {n: exp for n, exp in self._used.items() if exp > now}
            if answer.nonce in self._used:
                return CommandOutcome("ignored", answer.nonce, "replay: this answer was already acted on")
            if len(self._used) >= self._max_nonces:
                # Refusing is safe; forgetting a live nonce would let its answer be replayed.
                return CommandOutcome("ignored", answer.nonce, "too many live answers to remember")
            self._used[answer.nonce] = answer.expires_ms
            if answer.allow:
                now_s = self._monotonic()
                open_until = now_s + self.gate.relay_pulse_ms / 1000 + RELEASE_GRACE_S
                self._grants.append(_Grant(answer.nonce, open_until, now_s + self.gate.passage_timeout_s))
        action = "grant" if answer.allow else "deny"
        try:
            if answer.allow:
                self._link.grant(self.address, self.gate.relay_pulse_ms, display.grant_text())
            else:
                self._link.deny(self.address, display.deny_text(answer.reason))
        except ControllerError as exc:
            if answer.allow:
                # The gate never opened: the grant is over, and the gateway must hear so now.
                with self._lock:
                    self._grants = [g for g in self._grants if g.nonce != answer.nonce]
                self._emit("grant_unused", answer.nonce)
            return CommandOutcome(action, answer.nonce, str(exc))
        return CommandOutcome(action, answer.nonce, "")

    # --- controller reports ------------------------------------------------------------------------

    def controller_event(self, kind: str) -> None:
        """A report from this gate's controller (a contract.GATE_EVENT_KINDS kind)."""
        nonce = ""
        with self._lock:
            if kind in CONTROLLER_KINDS:
                if kind == self._controller_state:
                    return  # already said
                self._controller_state = kind
            elif kind == "passage" and self._grants:
                nonce = self._grants.pop(self._passage_grant()).nonce
        self._emit(kind, nonce)

    def _passage_grant(self) -> int:
        """Which pending grant a passage used (lock held): the oldest whose release is still on, else the newest.

        The oldest first, because the report of a passage can reach us after the next person's grant; the newest
        when no release is on any more, because a person who walked away leaves an older grant pending.
        """
        now = self._monotonic()
        for i, grant in enumerate(self._grants):
            if now <= grant.open_until:
                return i
        return len(self._grants) - 1

    def report_controller_state_once(self) -> None:
        """If nothing was said about the controller yet, say whether it is reachable now (after start-up)."""
        with self._lock:
            if self._controller_state:
                return
        online = self._link.is_secure(self.address)
        self.controller_event("controller_online" if online else "controller_offline")

    def tick(self) -> None:
        """Grants whose passage time is over become grant_unused."""
        now = self._monotonic()
        with self._lock:
            expired = [g for g in self._grants if g.deadline <= now]
            self._grants = [g for g in self._grants if g.deadline > now]
        for grant in expired:
            self._emit("grant_unused", grant.nonce)

    @property
    def pending_grants(self) -> list[str]:
        with self._lock:
            return [g.nonce for g in self._grants]
