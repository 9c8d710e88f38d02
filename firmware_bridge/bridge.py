"""One gate's bridge: signed decision answers from MQTT in, turnstile commands over OSDP out, events back.

The bridge trusts no message: it moves the relay only for an answer that is signed by a known decision key,
meant for this gate, forwarded for one of this gate's readers, unexpired, and never acted on before.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_bridge.controller import ControllerError, ControllerLink
from gateway import contract
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client
from gateway.site import Gate, Site

log = logging.getLogger(__name__)

Clock = Callable[[], int]  # epoch milliseconds
MAX_REMEMBERED_NONCES = 4096  # answers live 5 s: far more than one gate can see in that time


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


class GateBridge:
    """Drives the controller of `gate_code` (found on `link`) from the answers on its command topic."""

    def __init__(
        self,
        site: Site,
        gate_code: str,
        link: ControllerLink,
        keys: contract.DecisionKeys,
        broker: BrokerAddress,
        *,
        clock: Clock = epoch_ms,
        on_outcome: Callable[[CommandOutcome], None] | None = None,
        max_nonces: int = MAX_REMEMBERED_NONCES,
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
        self._address = gate.controller.address
        self._readers = frozenset(r.code for r in site.readers.values() if r.gate == gate.code)
        self._link = link
        self._keys = dict(keys)
        self._broker = broker
        self._clock = clock
        self._on_outcome = on_outcome
        self._max_nonces = max_nonces
        self._lock = threading.Lock()
        self._used: dict[str, int] = {}  # nonce -> expires_ms: kept until the answer could no longer be valid
        self._last_grant = ""  # nonce of the grant a passage belongs to
        self._seq = 0
        self._client: mqtt.Client | None = None
        self._command_topic = contract.gate_command_topic(gate.code)
        self._event_topic = contract.gate_event_topic(gate.code)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect, wait until the command subscription is granted, report the controller's state."""
        if self._client is not None:
            return
        # Seq starts at the clock, so a restarted bridge keeps counting upwards and the gateway's repeat
        # filter does not drop its events.
        self._seq = self._clock()
        subscribed = threading.Event()
        refused: list[str] = []

        def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Properties | None) -> None:
            refused.extend(str(rc) for rc in codes if rc.is_failure)
            subscribed.set()

        client = make_client(
            self._broker,
            client_id=f"{self._broker.username}-{secrets.token_hex(4)}",
            subscriptions=[(self._command_topic, 1)],
            on_message=self._on_message,
        )
        client.on_subscribe = on_subscribe
        connect_and_wait(client, self._broker, timeout_s)
        if not subscribed.wait(timeout_s) or refused:
            client.disconnect()
            client.loop_stop()
            why = ", ".join(refused) or f"no answer in {timeout_s} s"
            raise ConnectionError(f"gate {self.gate.code}: subscription to {self._command_topic} failed: {why}")
        self._client = client
        self._link.add_listener(self._on_controller_event)
        state = "controller_online" if self._link.is_secure(self._address) else "controller_offline"
        self._on_controller_event(self._address, state)
        log.info("gate %s: bridge listening on %s", self.gate.code, self._command_topic)

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        self._link.remove_listener(self._on_controller_event)
        client.disconnect()
        client.loop_stop()

    # --- decisions in ------------------------------------------------------------------------------

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        # An exception here would end paho's network thread, and with it the bridge.
        try:
            if message.topic != self._command_topic:
                log.warning("gate %s: message on unexpected topic %s", self.gate.code, message.topic)
                return
            self.handle_command(bytes(message.payload), retained=bool(message.retain))
        except Exception:
            log.exception("gate %s: failed to handle a command", self.gate.code)

    def handle_command(self, payload: bytes, *, retained: bool = False) -> CommandOutcome:
        """Check one command message and, if it is genuine and new, act on it."""
        outcome = self._decide_and_act(payload, retained)
        if outcome.action == "ignored":
            log.warning("gate %s: ignored answer %s: %s", self.gate.code, outcome.nonce or "-", outcome.detail)
        elif outcome.detail:
            log.error("gate %s: %s %s failed: %s", self.gate.code, outcome.action, outcome.nonce, outcome.detail)
        else:
            log.info("gate %s: %s %s", self.gate.code, outcome.action, outcome.nonce)
        if self._on_outcome is not None:
            self._on_outcome(outcome)
        return outcome

    def _decide_and_act(self, payload: bytes, retained: bool) -> CommandOutcome:
        now = self._clock()
        try:
            answer = contract.DecisionAnswer.from_json(payload)
        except contract.ContractError as exc:
            return CommandOutcome("ignored", "", f"malformed answer: {exc}")
        if retained:
            # A command is only meant for the moment it is sent. A retained one would be replayed to a
            # restarted bridge, whose memory of used nonces started empty.
            return CommandOutcome("ignored", answer.nonce, "retained message: commands are never stored")
        problem = contract.answer_problem(answer, self._keys, reader=None, nonce=None, gate=self.gate.code, now_ms=now)
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
                self._last_grant = answer.nonce
        try:
            if answer.allow:
                self._link.grant(self._address, self.gate.relay_pulse_ms, "ACCESS GRANTED")
            else:
                self._link.deny(self._address, f"DENIED {answer.reason}")
        except ControllerError as exc:
            if answer.allow:
                with self._lock:
                    if self._last_grant == answer.nonce:
                        self._last_grant = ""
            return CommandOutcome("grant" if answer.allow else "deny", answer.nonce, str(exc))
        return CommandOutcome("grant" if answer.allow else "deny", answer.nonce, "")

    # --- events out --------------------------------------------------------------------------------

    def _on_controller_event(self, address: int, kind: str) -> None:
        if address != self._address:
            return
        with self._lock:
            seq = self._seq
            self._seq += 1
            nonce = ""
            if kind == "passage":
                nonce, self._last_grant = self._last_grant, ""
        event = contract.GateEvent(gate=self.gate.code, kind=kind, seq=seq, at_ms=self._clock(), nonce=nonce)
        log.info("gate %s: %s (seq %d%s)", self.gate.code, kind, seq, f", answer {nonce}" if nonce else "")
        client = self._client
        if client is None:
            log.warning("gate %s: not connected; event %s not published", self.gate.code, kind)
            return
        # QoS 1: paho keeps the message and sends it again after a reconnect.
        info = client.publish(self._event_topic, event.to_json(), qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.error("gate %s: could not publish %s: %s", self.gate.code, kind, mqtt.error_string(info.rc))
