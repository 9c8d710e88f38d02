"""A whole simulated gate in one process: turnstile controller, OSDP link, bridge. For tests and the demo."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import osdp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware_bridge.bridge import Clock, CommandOutcome, GateBridge, epoch_ms
from firmware_bridge.channels import channel_pair, pty_pair
from firmware_bridge.controller import ControllerLink
from firmware_bridge.turnstile import SCBK_BYTES, SimulatedTurnstile
from gateway.mqttlink import BrokerAddress
from gateway.site import Site

log = logging.getLogger(__name__)

SECURE_CHANNEL_TIMEOUT_S = 10.0


@dataclass
class SimulatedGate:
    turnstile: SimulatedTurnstile
    link: ControllerLink
    bridge: GateBridge
    _closers: tuple[Callable[[], None], ...] = ()

    def stop(self) -> None:
        """Stop the bridge, then the panel, then the turnstile, then close the channel."""
        self.bridge.stop()
        self.link.stop()
        self.turnstile.stop()
        for close in self._closers:
            close()


def start_simulated_gate(
    site: Site,
    gate_code: str,
    decision_keys: Mapping[str, Ed25519PublicKey],
    broker: BrokerAddress,
    channel: Literal["memory", "pty"] = "memory",
    *,
    clock: Clock = epoch_ms,
    held_open_s: float | None = None,
    on_outcome: Callable[[CommandOutcome], None] | None = None,
    osdp_log_level: int = osdp.LogLevel.Error,
) -> SimulatedGate:
    """Start a turnstile, a secure OSDP link to it (fresh random key) and the gate's bridge on `broker`.

    `held_open_s` defaults to the gate's passage_timeout_s. Raises TimeoutError when the secure channel is not
    up within 10 s, ConnectionError when the broker refuses the bridge.
    """
    gate = site.gates.get(gate_code)
    if gate is None:
        raise ValueError(f"unknown gate {gate_code!r}")
    if gate.controller is None:
        raise ValueError(f"gate {gate_code!r} has no controller in the site file")
    if channel == "memory":
        cp_channel, pd_channel = channel_pair()
    elif channel == "pty":
        cp_channel, pd_channel = pty_pair()
    else:
        raise ValueError(f"channel must be 'memory' or 'pty', not {channel!r}")
    address = gate.controller.address
    scbk = secrets.token_bytes(SCBK_BYTES)
    turnstile = SimulatedTurnstile(pd_channel, address, scbk, log_level=osdp_log_level)
    link = ControllerLink(
        cp_channel,
        {address: scbk},
        held_open_s=float(gate.passage_timeout_s if held_open_s is None else held_open_s),
        log_level=osdp_log_level,
    )
    bridge = GateBridge(site, gate_code, link, decision_keys, broker, clock=clock, on_outcome=on_outcome)
    sim = SimulatedGate(turnstile, link, bridge, (cp_channel.close, pd_channel.close))
    try:
        turnstile.start()
        link.start()
        if not link.wait_secure(address, SECURE_CHANNEL_TIMEOUT_S):
            raise TimeoutError(
                f"gate {gate_code}: no OSDP secure channel to controller {address} "
                f"within {SECURE_CHANNEL_TIMEOUT_S:.0f} s"
            )
        bridge.start()
    except BaseException:
        sim.stop()
        raise
    log.info("gate %s: simulated turnstile at address %d, secure channel up", gate_code, address)
    return sim
