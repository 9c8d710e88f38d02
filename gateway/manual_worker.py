"""MQTT adapter of the guard desk: gate pages' requests in on a shared subscription, signed answers out.

Like decisions: the answer goes only to the requesting reader's own guard answer topic, with the request's
CorrelationData, and requests are handled on a worker thread, off paho's network thread.
"""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt

from gateway import contract
from gateway.manual_decisions import GuardDesk
from gateway.mqtt_inbox import InboxWorker, Refused, reply_correlation
from gateway.mqttlink import BrokerAddress, reply_properties

log = logging.getLogger(__name__)


class GuardWorker(InboxWorker):
    def __init__(self, desk: GuardDesk, address: BrokerAddress, client_id: str) -> None:
        super().__init__(
            address,
            client_id,
            contract.GUARD_REQUEST_SUBSCRIPTION,
            name="guards",
            max_batch=32,
            if_full="the gate page will time out",
        )
        self.desk = desk
        self.handled = 0

    def _accept(self, msg: mqtt.MQTTMessage) -> tuple[contract.GuardRequest, bytes | None] | None:
        try:
            reader = contract.reader_from_guard_request_topic(msg.topic)
            request = contract.GuardRequest.from_json(bytes(msg.payload))
        except contract.ContractError as exc:
            log.warning("ignored guard request on %s: %s", msg.topic, exc)
            return None
        if request.reader != reader:
            log.warning("ignored guard request on %s naming reader %s", msg.topic, request.reader)
            return None
        try:
            return request, reply_correlation(msg, contract.guard_answer_topic(reader))
        except Refused as exc:
            log.warning("reader %s %s (guard request); refused", reader, exc)
            return None

    def handle(self, batch: list[mqtt.MQTTMessage]) -> None:
        for accepted in map(self._accept, batch):
            if accepted is None:
                continue
            request, correlation = accepted
            try:
                answer = self.desk.answer(request)
            except Exception:  # one bad request must not stop the others; the page times out
                log.exception("guard request %s of reader %s failed", request.op, request.reader)
                continue
            out = reply_properties(correlation if correlation else request.nonce.encode())
            self.client.publish(contract.guard_answer_topic(request.reader), answer.to_json(), qos=1, properties=out)
            self.handled += 1
