"""MQTT adapter of the decision service: requests in on a shared subscription, signed answers out.

The answer goes to the request's ResponseTopic with its CorrelationData (MQTT v5 request/response), but
only when that topic is the requesting reader's own answer topic: a request cannot aim answers elsewhere.
Requests are decided on paho's network thread, right after each read (gateway/mqtt_inbox.py): a batch is
whatever the socket held, and its answers are written as soon as it is decided. Under overload the backlog
stays at the broker (the worker reads at most MAX_BATCH ahead) where readers' requests expire after 1 s, and
what was read but waited more than STALE_AFTER_S in this process is shed.
"""

from __future__ import annotations

import logging
import time

import paho.mqtt.client as mqtt

from gateway import contract
from gateway.decisions import DecisionService
from gateway.mqtt_inbox import InboxWorker, Refused, reply_correlation
from gateway.mqttlink import BrokerAddress, reply_properties
from gateway.rate_limit import ReaderRateLimit

log = logging.getLogger(__name__)

MAX_BATCH = 128  # requests decided in one transaction at most, and read ahead at most (ReceiveMaximum)
# Readers stop waiting after 1.5 s (readers/run.py). A request that waited longer in this process helps nobody:
# deciding it anyway would spend the time the fresh ones need, and an overload would never end.
STALE_AFTER_S = 1.5


class DecisionWorker(InboxWorker):
    def __init__(
        self,
        service: DecisionService,
        address: BrokerAddress,
        client_id: str = "gateway-1",
        rate_limit: ReaderRateLimit | None = None,
    ) -> None:
        # Whatever queued up while the last batch was being committed is decided in one transaction.
        super().__init__(
            address,
            client_id,
            contract.REQUEST_SUBSCRIPTION,
            name="decisions",
            max_batch=MAX_BATCH,
            if_full="the reader will time out",
            on_network_thread=True,  # a reader waits for each answer: no hand-over between threads
        )
        self.service = service
        self.handled = 0
        # One reader flooding (rogue, or stuck in a loop) must not starve the other gates.
        self.rate_limit = rate_limit or ReaderRateLimit(time.monotonic)
        self.dropped = 0
        self.shed = 0  # requests too old to be worth deciding (overload)

    def _accept(self, msg: mqtt.MQTTMessage) -> tuple[contract.DecisionRequest, bytes | None] | None:
        try:
            reader = contract.reader_from_request_topic(msg.topic)
        except contract.ContractError as exc:
            log.warning("ignored request on %s: %s", msg.topic, exc)
            return None
        if not self.rate_limit.allow(reader):  # before parsing: a flood costs as little as possible
            self.dropped += 1
            if self.dropped % 100 == 1:  # a flood must not flood the log too
                log.warning("reader %s is over its request rate; %d request(s) dropped so far", reader, self.dropped)
            return None
        try:
            request = contract.DecisionRequest.from_json(bytes(msg.payload))
        except contract.ContractError as exc:
            log.warning("ignored request on %s: %s", msg.topic, exc)
            return None
        if request.reader != reader:
            log.warning("ignored request on %s naming reader %s", msg.topic, request.reader)
            return None
        try:
            return request, reply_correlation(msg, contract.answer_topic(reader))
        except Refused as exc:
            log.warning("reader %s %s; refused", reader, exc)
            return None

    def handle(self, batch: list[mqtt.MQTTMessage]) -> None:
        now = time.monotonic()
        fresh = [m for m in batch if now - m.timestamp <= STALE_AFTER_S]  # paho stamps arrival, monotonic
        if len(fresh) < len(batch):
            self.shed += len(batch) - len(fresh)
            log.warning(
                "overloaded: %d request(s) older than %.1f s shed, undecided", len(batch) - len(fresh), STALE_AFTER_S
            )
        accepted = [a for a in map(self._accept, fresh) if a is not None]
        if not accepted:
            return
        answers = self.service.answer_many([request for request, _ in accepted])
        for (request, correlation), answer in zip(accepted, answers, strict=True):
            out = reply_properties(correlation if correlation else request.nonce.encode())
            self.client.publish(contract.answer_topic(request.reader), answer.to_json(), qos=1, properties=out)
        self.handled += len(accepted)
