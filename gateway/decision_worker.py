"""MQTT adapter of the decision service: requests in on a shared subscription, signed answers out.

The answer goes to the request's ResponseTopic with its CorrelationData (MQTT v5 request/response), but
only when that topic is the requesting reader's own answer topic: a request cannot aim answers elsewhere.
Requests are handled on one worker thread, off paho's network thread, so the link stays serviced.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway import contract
from gateway.decisions import DecisionService
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client

log = logging.getLogger(__name__)


class DecisionWorker:
    def __init__(
        self, service: DecisionService, address: BrokerAddress, client_id: str = "gateway-1"
    ) -> None:
        self.service = service
        self.address = address
        self.client = make_client(
            address, client_id, [(contract.REQUEST_SUBSCRIPTION, 1)], on_message=self._on_message
        )
        self._inbox: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue(maxsize=10_000)
        self._thread = threading.Thread(target=self._run, name="decisions", daemon=True)
        self.handled = 0

    def start(self) -> None:
        self._thread.start()
        connect_and_wait(self.client, self.address)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._inbox.put(None)
        self._thread.join(5)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._inbox.put_nowait(msg)
        except queue.Full:
            log.error("decision inbox full; request on %s dropped (the reader will time out)", msg.topic)

    def _run(self) -> None:
        while (msg := self._inbox.get()) is not None:
            try:
                self._handle(msg)
            except Exception:  # a fault in one request must not stop the gate's service
                log.exception("request on %s failed", msg.topic)

    def _handle(self, msg: mqtt.MQTTMessage) -> None:
        try:
            reader = contract.reader_from_request_topic(msg.topic)
            request = contract.DecisionRequest.from_json(msg.payload)
        except contract.ContractError as exc:
            log.warning("ignored request on %s: %s", msg.topic, exc)
            return
        if request.reader != reader:
            log.warning("ignored request on %s naming reader %s", msg.topic, request.reader)
            return
        expected = contract.answer_topic(reader)
        props = msg.properties
        response_topic = getattr(props, "ResponseTopic", expected) if props else expected
        if response_topic != expected:
            log.warning("reader %s asked for answers on %s; refused", reader, response_topic)
            return
        answer = self.service.answer(request)
        out = Properties(PacketTypes.PUBLISH)
        correlation = getattr(props, "CorrelationData", None) if props else None
        out.CorrelationData = correlation if correlation else request.nonce.encode()
        self.client.publish(expected, answer.to_json(), qos=1, properties=out)
        self.handled += 1
