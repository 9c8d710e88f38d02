"""The web side's live view of readers and bridges: their retained statuses (contract.ReaderStatus,
contract.BridgeStatus), kept in memory.

Optional: the web runs it only when given the broker (`python -m gateway web --password-file …`). It connects
in the background, so the web starts even while the broker is away, and the retained messages give it every
reader's and bridge's latest status as soon as it subscribes. Nothing is written anywhere: the audit keeps the changes.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from gateway import contract
from gateway.mqttlink import BrokerAddress, make_client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Heard:
    status: contract.ReaderStatus
    received_ms: int  # the web's clock when it arrived (the reader's clock may be off)
    live: bool = True  # False for a retained status handed over on subscribing: received_ms says nothing then


@dataclass(frozen=True)
class HeardBridge:
    status: contract.BridgeStatus
    received_ms: int  # the web's clock when it arrived


class StatusBoard:
    def __init__(self, address: BrokerAddress, clock_ms: Callable[[], int]) -> None:
        self.address = address
        self.clock_ms = clock_ms
        self._lock = threading.Lock()
        self._readers: dict[str, Heard] = {}
        self._bridges: dict[str, HeardBridge] = {}
        self.client = make_client(
            address,
            f"gateway-web-{secrets.token_hex(4)}",  # several web processes may run
            [(contract.READER_STATUS_SUBSCRIPTION, 1), (contract.BRIDGE_STATUS_SUBSCRIPTION, 1)],
            on_message=self._on_message,
        )

    @property
    def connected(self) -> bool:
        return self.client.is_connected()

    def start(self) -> None:
        self.client.connect_async(self.address.host, self.address.port, keepalive=15)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def readers(self) -> dict[str, Heard]:
        with self._lock:
            return dict(self._readers)

    def bridges(self) -> dict[str, HeardBridge]:
        with self._lock:
            return dict(self._bridges)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if mqtt.topic_matches_sub(contract.BRIDGE_STATUS_SUBSCRIPTION, msg.topic):
            self._on_bridge_status(msg)
            return
        try:
            status = contract.reader_status_on(msg.topic, bytes(msg.payload))
        except contract.ContractError as exc:
            log.warning("ignored status on %s: %s", msg.topic, exc)
            return
        reader = status.reader
        with self._lock:
            self._readers[reader] = Heard(status, self.clock_ms(), live=not msg.retain)

    def _on_bridge_status(self, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:  # a cleared retained status: the bridge is gone from the site
            with self._lock:
                self._bridges.pop(msg.topic.split("/")[3], None)
            return
        try:
            status = contract.bridge_status_on(msg.topic, bytes(msg.payload))
        except contract.ContractError as exc:
            log.warning("ignored status on %s: %s", msg.topic, exc)
            return
        bridge = status.bridge
        with self._lock:
            self._bridges[bridge] = HeardBridge(status, self.clock_ms())
