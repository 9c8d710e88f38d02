"""Prometheus metrics of a bridge (`python -m firmware_bridge run --metrics-port`).

Commands are counted as they are handled (one increment each); the outbox length, the broker link and each
controller's secure-channel state are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from firmware_bridge.gate import CommandOutcome


class BridgeState(Protocol):
    @property
    def connected(self) -> bool: ...


class Outbox(Protocol):
    def __len__(self) -> int: ...


class Controllers(Protocol):
    def is_secure(self, address: int) -> bool: ...


class _BridgeCollector(Collector):
    def __init__(self, bridge: BridgeState, outbox: Outbox, link: Controllers, gates: Mapping[str, int]) -> None:
        self.bridge, self.outbox, self.link, self.gates = bridge, outbox, link, gates

    def collect(self) -> Iterable[Metric]:
        queue = GaugeMetricFamily(
            "accessgw_bridge_outbox_events", "Gate events kept on disk until the gateway acknowledges them."
        )
        queue.add_metric([], len(self.outbox))
        yield queue
        broker = GaugeMetricFamily("accessgw_bridge_broker_connected", "1 while the bridge's MQTT link is up.")
        broker.add_metric([], 1.0 if self.bridge.connected else 0.0)
        yield broker
        controller = GaugeMetricFamily(
            "accessgw_bridge_controller_link_up",
            "1 while the OSDP secure channel to the gate's controller is up.",
            labels=["gate"],
        )
        for gate, address in self.gates.items():
            controller.add_metric([gate], 1.0 if self.link.is_secure(address) else 0.0)
        yield controller


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.commands = Counter(
            "accessgw_bridge_commands",
            "Signed answers handled: grant, deny, or ignored (not genuine, replayed, expired, ...).",
            ["action"],
            registry=self.registry,
        )
        for action in ("grant", "deny", "ignored"):
            self.commands.labels(action)

    def watch(self, bridge: BridgeState, outbox: Outbox, link: Controllers, gates: Mapping[str, int]) -> None:
        """Report `bridge`'s link, `outbox` length and each gate's controller (gate code -> OSDP address)."""
        self.registry.register(_BridgeCollector(bridge, outbox, link, gates))

    def on_outcome(self, outcome: CommandOutcome) -> None:
        self.commands.labels(outcome.action).inc()
