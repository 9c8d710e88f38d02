"""Simulated gates in one process: turnstile controllers, the OSDP link to them, the bridge. For tests and demos.

`start_simulated_gate` is one gate on its own line (memory or pty); `start_simulated_bus` is every gate of
one RS-485 bus of the site, each controller at its own address on one shared line, served by one bridge.
Each controller gets a fresh random key. The panel's side of the line is a CuttableLine, so tests can cut it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import osdp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware_bridge.bridge import (
    ACK_TIMEOUT_S,
    RECONNECT_DELAY_S,
    STATUS_EVERY_S,
    Bridge,
    Clock,
    CommandOutcome,
    epoch_ms,
)
from firmware_bridge.channels import CuttableLine, channel_pair, memory_bus, pty_pair
from firmware_bridge.controller import ControllerLink
from firmware_bridge.outbox import MEMORY, EventOutbox
from firmware_bridge.turnstile import SCBK_BYTES, SimulatedTurnstile
from gateway.mqttlink import BrokerAddress
from gateway.site import Site

log = logging.getLogger(__name__)

SECURE_CHANNEL_TIMEOUT_S = 10.0


@dataclass
class SimulatedGate:
    """Simulated controllers (by gate code), the link to them, the bridge, the line and the outbox."""

    turnstiles: dict[str, SimulatedTurnstile]
    link: ControllerLink
    bridge: Bridge
    line: CuttableLine
    outbox: EventOutbox
    _closers: tuple[Callable[[], None], ...] = field(default=())

    @property
    def turnstile(self) -> SimulatedTurnstile:
        """The turnstile, for a simulation of one gate."""
        if len(self.turnstiles) != 1:
            raise AttributeError("this simulation has several turnstiles; use .turnstiles")
        return next(iter(self.turnstiles.values()))

    def stop(self) -> None:
        """Stop the bridge, then the panel, then the turnstiles, then close the line and the outbox."""
        self.bridge.stop()
        self.link.stop()
        for turnstile in self.turnstiles.values():
            turnstile.stop()
        for close in self._closers:
            close()
        self.outbox.close()


def _check_gates(site: Site, gate_codes: Sequence[str]) -> None:
    for code in gate_codes:
        gate = site.gates.get(code)
        if gate is None:
            raise ValueError(f"unknown gate {code!r}")
        if gate.controller is None:
            raise ValueError(f"gate {code!r} has no controller in the site file")


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
    outbox: str | Path = MEMORY,
    ack_timeout_s: float = ACK_TIMEOUT_S,
    reconnect_delay_s: tuple[float, float] = RECONNECT_DELAY_S,
    reader_keys: Mapping[str, Ed25519PublicKey] | None = None,
    status_every_s: float = STATUS_EVERY_S,
) -> SimulatedGate:
    """Start a turnstile, a secure OSDP link to it (fresh random key) and the gate's bridge on `broker`.

    `held_open_s` defaults to the gate's passage_timeout_s. Raises TimeoutError when the secure channel is not
    up within 10 s, ConnectionError when the broker refuses the bridge.
    """
    _check_gates(site, [gate_code])
    if channel == "memory":
        cp_channel, pd_channel = channel_pair()
    elif channel == "pty":
        cp_channel, pd_channel = pty_pair()
    else:
        raise ValueError(f"channel must be 'memory' or 'pty', not {channel!r}")
    return _start(
        site,
        [gate_code],
        decision_keys,
        broker,
        cp_channel,
        [pd_channel],
        clock=clock,
        held_open_s=held_open_s,
        on_outcome=on_outcome,
        osdp_log_level=osdp_log_level,
        outbox=outbox,
        ack_timeout_s=ack_timeout_s,
        reconnect_delay_s=reconnect_delay_s,
        reader_keys=reader_keys,
        status_every_s=status_every_s,
    )


def start_simulated_bus(
    site: Site,
    bus: str,
    decision_keys: Mapping[str, Ed25519PublicKey],
    broker: BrokerAddress,
    *,
    clock: Clock = epoch_ms,
    held_open_s: float | None = None,
    on_outcome: Callable[[CommandOutcome], None] | None = None,
    osdp_log_level: int = osdp.LogLevel.Error,
    outbox: str | Path = MEMORY,
    ack_timeout_s: float = ACK_TIMEOUT_S,
    reconnect_delay_s: tuple[float, float] = RECONNECT_DELAY_S,
    reader_keys: Mapping[str, Ed25519PublicKey] | None = None,
    status_every_s: float = STATUS_EVERY_S,
) -> SimulatedGate:
    """Every gate of `bus` as zones.yaml lists it: one multidrop line, one controller per address, one bridge."""
    gate_codes = [g.code for g in site.gates.values() if g.controller is not None and g.controller.bus == bus]
    if not gate_codes:
        raise ValueError(f"no gate of the site has its controller on bus {bus!r}")
    cp_channel, pd_channels = memory_bus(len(gate_codes))
    return _start(
        site,
        gate_codes,
        decision_keys,
        broker,
        cp_channel,
        pd_channels,
        clock=clock,
        held_open_s=held_open_s,
        on_outcome=on_outcome,
        osdp_log_level=osdp_log_level,
        outbox=outbox,
        ack_timeout_s=ack_timeout_s,
        reconnect_delay_s=reconnect_delay_s,
        reader_keys=reader_keys,
        status_every_s=status_every_s,
    )


def _start(
    site: Site,
    gate_codes: Sequence[str],
    decision_keys: Mapping[str, Ed25519PublicKey],
    broker: BrokerAddress,
    cp_channel: osdp.Channel,
    pd_channels: Sequence[osdp.Channel],
    *,
    clock: Clock,
    held_open_s: float | None,
    on_outcome: Callable[[CommandOutcome], None] | None,
    osdp_log_level: int,
    outbox: str | Path,
    ack_timeout_s: float,
    reconnect_delay_s: tuple[float, float],
    reader_keys: Mapping[str, Ed25519PublicKey] | None,
    status_every_s: float,
) -> SimulatedGate:
    gates = [site.gates[c] for c in gate_codes]
    addresses = {g.code: g.controller.address for g in gates if g.controller is not None}
    keys = {addresses[c]: secrets.token_bytes(SCBK_BYTES) for c in gate_codes}
    turnstiles = {
        c: SimulatedTurnstile(ch, addresses[c], keys[addresses[c]], log_level=osdp_log_level)
        for c, ch in zip(gate_codes, pd_channels, strict=True)
    }
    line = CuttableLine(cp_channel, record=False)
    link = ControllerLink(
        line,
        keys,
        held_open_s={
            addresses[g.code]: float(g.passage_timeout_s if held_open_s is None else held_open_s) for g in gates
        },
        log_level=osdp_log_level,
    )
    events = EventOutbox(outbox, clock=clock)
    bridge = Bridge(
        site,
        gate_codes,
        link,
        decision_keys,
        broker,
        events,
        clock=clock,
        on_outcome=on_outcome,
        ack_timeout_s=ack_timeout_s,
        reconnect_delay_s=reconnect_delay_s,
        reader_keys=reader_keys,
        status_every_s=status_every_s,
    )
    closers = tuple(ch.close for ch in (cp_channel, *pd_channels) if hasattr(ch, "close"))
    sim = SimulatedGate(turnstiles, link, bridge, line, events, closers)
    try:
        for turnstile in turnstiles.values():
            turnstile.start()
        link.start()
        for code, address in addresses.items():
            if not link.wait_secure(address, SECURE_CHANNEL_TIMEOUT_S):
                raise TimeoutError(
                    f"gate {code}: no OSDP secure channel to controller {address} "
                    f"within {SECURE_CHANNEL_TIMEOUT_S:.0f} s"
                )
        bridge.start()
    except BaseException:
        sim.stop()
        raise
    log.info("simulated %s: secure channel up to %s", ", ".join(gate_codes), ", ".join(map(str, addresses.values())))
    return sim
