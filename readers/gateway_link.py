"""The reader's link to the gateway: MQTT v5 request/response, accepting only genuine answers to its own requests.

An answer counts only if it is signed by a pinned decision key, names this reader, carries the nonce of a
request still pending here, and has not expired. Anything else is logged and dropped.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway import contract
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client

log = logging.getLogger(__name__)


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: contract.DecisionAnswer | None = None


class GatewayLink:
    def __init__(
        self,
        address: BrokerAddress,
        reader: str,
        gate: str,
        decision_keys: contract.DecisionKeys,
        clock_ms: Callable[[], int],
    ) -> None:
        self.address = address
        self.reader = reader
        self.gate = gate
        self.keys = decision_keys
        self.clock_ms = clock_ms
        self.online = False
        self._stopping = False
        self.rejected = 0  # answers dropped as not genuine, not ours or stale
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self.client = make_client(
            address,
            f"reader-{reader}",
            [(contract.answer_topic(reader), 1)],
            on_message=self._on_answer,
            on_link=self._on_link,
        )

    def start(self) -> None:
        connect_and_wait(self.client, self.address)

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def _on_link(self, up: bool) -> None:
        if up != self.online and not self._stopping:
            log.warning("reader %s: gateway link %s", self.reader, "up" if up else "DOWN")
        self.online = up

    def ask(self, token: str, timeout_s: float) -> contract.DecisionAnswer | None:
        """The gateway's genuine answer, or None when none came in time."""
        nonce = secrets.token_hex(16)
        request = contract.DecisionRequest(
            reader=self.reader, nonce=nonce, token=token, sent_ms=self.clock_ms()
        )
        pending = _Pending()
        with self._lock:
            self._pending[nonce] = pending
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = contract.answer_topic(self.reader)
        props.CorrelationData = nonce.encode()
        try:
            self.client.publish(
                contract.request_topic(self.reader), request.to_json(), qos=1, properties=props
            )
            pending.done.wait(timeout_s)
        finally:
            with self._lock:
                self._pending.pop(nonce, None)
        return pending.answer

    def forward_to_bridge(self, answer: contract.DecisionAnswer) -> None:
        """The bridge checks the gateway's signature again before it moves anything."""
        self.client.publish(contract.gate_command_topic(self.gate), answer.to_json(), qos=1)

    def _on_answer(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            answer = contract.DecisionAnswer.from_json(bytes(msg.payload))
        except contract.ContractError as exc:
            self.rejected += 1
            log.warning("reader %s: malformed answer dropped: %s", self.reader, exc)
            return
        with self._lock:
            pending = self._pending.get(answer.nonce)
        if pending is None:
            self.rejected += 1
            log.warning(
                "reader %s: answer for no pending request (nonce %s) dropped", self.reader, answer.nonce
            )
            return
        problem = contract.answer_problem(
            answer, self.keys, reader=self.reader, nonce=answer.nonce, gate=self.gate, now_ms=self.clock_ms()
        )
        if problem is not None:
            self.rejected += 1
            log.warning("reader %s: answer dropped: %s", self.reader, problem)
            return
        pending.answer = answer
        pending.done.set()
