"""An MQTT subscription whose messages are handled on one worker thread, in batches, off paho's network thread.

Database writes never run on the network thread, so keep-alives and acknowledgements keep flowing while a
transaction commits; whatever queued up meanwhile is handed over as the next batch.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import paho.mqtt.client as mqtt

from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client

log = logging.getLogger(__name__)


class InboxWorker:
    def __init__(
        self, address: BrokerAddress, client_id: str, subscription: str, *, name: str, max_batch: int, if_full: str
    ) -> None:
        self.address = address
        self.name = name
        self.max_batch = max_batch
        self.if_full = if_full  # what happens to a message dropped because the inbox is full
        self.client = make_client(address, client_id, [(subscription, 1)], on_message=self._on_message)
        self._inbox: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue(maxsize=10_000)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def handle(self, batch: list[mqtt.MQTTMessage]) -> None:
        raise NotImplementedError

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
            log.error("%s inbox full; message on %s dropped (%s)", self.name, msg.topic, self.if_full)

    def _run(self) -> None:
        while (first := self._inbox.get()) is not None:
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    msg = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if msg is None:
                    self._inbox.put(None)
                    break
                batch.append(msg)
            try:
                self.handle(batch)
            except Exception:  # a fault in one batch must not stop the service
                log.exception("%s: a batch of %d messages failed", self.name, len(batch))


class Refused(Exception):
    """A request asking for its answer anywhere but its reader's own answer topic."""


def reply_correlation(msg: mqtt.MQTTMessage, own_answer_topic: str) -> bytes | None:
    """The request's CorrelationData (MQTT v5 request/response), after checking that its ResponseTopic, if any, is
    the requesting reader's own answer topic: a request cannot aim answers at another reader. Raises Refused."""
    props = msg.properties
    response_topic = getattr(props, "ResponseTopic", own_answer_topic) if props else own_answer_topic
    if response_topic != own_answer_topic:
        raise Refused(f"asked for answers on {response_topic}")
    return getattr(props, "CorrelationData", None) if props else None
