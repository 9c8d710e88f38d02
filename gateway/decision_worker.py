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

MAX_BATCH = 256  # requests decided in one transaction at most


class DecisionWorker:
    def __init__(self, service: DecisionService, address: BrokerAddress, client_id: str = "gateway-1") -> None:
        self.service = service
        self.address = address
        self.client = make_client(address, client_id, [(contract.REQUEST_SUBSCRIPTION, 1)], on_message=self._on_message)
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
        while (first := self._inbox.get()) is not None:
            batch = [first]
            # Whatever queued up while the last batch was being committed is decided in one transaction.
            while len(batch) < MAX_BATCH:
                try:
                    msg = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if msg is None:
                    self._inbox.put(None)
                    break
                batch.append(msg)
            try:
                self._handle(batch)
            except Exception:  # a fault in one batch must not stop the gates' service
                log.exception("a batch of %d requests failed", len(batch))

    def _accept(self, msg: mqtt.MQTTMessage) -> tuple[contract.DecisionRequest, bytes | None] | None:
        try:
            reader = contract.reader_from_request_topic(msg.topic)
            request = contract.DecisionRequest.from_json(bytes(msg.payload))
        except contract.ContractError as exc:
            log.warning("ignored request on %s: %s", msg.topic, exc)
            return None
        if request.reader != reader:
            log.warning("ignored request on %s naming reader %s", msg.topic, request.reader)
            return None
        props = msg.properties
        expected = contract.answer_topic(reader)
        response_topic = getattr(props, "ResponseTopic", expected) if props else expected
        if response_topic != expected:
            log.warning("reader %s asked for answers on %s; refused", reader, response_topic)
            return None
        correlation = getattr(props, "CorrelationData", None) if props else None
        return request, correlation

    def _handle(self, batch: list[mqtt.MQTTMessage]) -> None:
        accepted = [a for a in map(self._accept, batch) if a is not None]
        if not accepted:
            return
        answers = self.service.answer_many([request for request, _ in accepted])
        for (request, correlation), answer in zip(accepted, answers, strict=True):
            out = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            out.CorrelationData = correlation if correlation else request.nonce.encode()
            self.client.publish(contract.answer_topic(request.reader), answer.to_json(), qos=1, properties=out)
        self.handled += len(accepted)
