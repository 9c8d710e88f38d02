"""The gate page's link to the gateway: guard requests out, signed guard answers in, over MQTT v5 request/response.

Its own MQTT connection (same reader account, its own client id) on the reader's guard topics, so the scan path
of readers.gateway_link is untouched. An answer counts only if the gateway's decision key signed it for this
reader and a request still pending here; anything else is logged and dropped.
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
        self.answer: contract.GuardAnswer | None = None


class GuardLink:
    def __init__(
        self,
        address: BrokerAddress,
        reader: str,
        decision_keys: contract.DecisionKeys,
        clock_ms: Callable[[], int],
        timeout_s: float = 5.0,
    ) -> None:
        self.address = address
        self.reader = reader
        self.keys = decision_keys
        self.clock_ms = clock_ms
        self.timeout_s = timeout_s
        self.rejected = 0
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self.client = make_client(
            address,
            f"reader-{reader}-gate-page",
            [(contract.guard_answer_topic(reader), 1)],
            on_message=self._on_answer,
        )

    def start(self) -> None:
        connect_and_wait(self.client, self.address)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def ask(self, op: str, **fields: str) -> contract.GuardAnswer | None:
        """The gateway's genuine answer to one guard request, or None when none came in time."""
        nonce = secrets.token_hex(16)
        request = contract.GuardRequest(reader=self.reader, nonce=nonce, op=op, sent_ms=self.clock_ms(), **fields)
        pending = _Pending()
        with self._lock:
            self._pending[nonce] = pending
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = contract.guard_answer_topic(self.reader)
        props.CorrelationData = nonce.encode()
        try:
            self.client.publish(contract.guard_request_topic(self.reader), request.to_json(), qos=1, properties=props)
            pending.done.wait(self.timeout_s)
        finally:
            with self._lock:
                self._pending.pop(nonce, None)
        return pending.answer

    def _on_answer(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            answer = contract.GuardAnswer.from_json(bytes(msg.payload))
        except contract.ContractError as exc:
            self.rejected += 1
            log.warning("reader %s: malformed guard answer dropped: %s", self.reader, exc)
            return
        with self._lock:
            pending = self._pending.get(answer.nonce)
        problem = (
            "no pending request"
            if pending is None
            else contract.guard_answer_problem(answer, self.keys, reader=self.reader, nonce=answer.nonce)
        )
        if problem is not None or pending is None:
            self.rejected += 1
            log.warning("reader %s: guard answer dropped: %s", self.reader, problem)
            return
        pending.answer = answer
        pending.done.set()
