"""An MQTT subscription whose messages are handled in batches: whatever arrived while the last batch was being
handled is the next batch.

By default batches are handled on a worker thread of their own, off paho's network thread, so keep-alives and
acknowledgements keep flowing while a slow transaction commits. A worker whose batches are short and whose
answers are awaited (the decision service) handles them on the network thread instead (`on_network_thread`),
after each read from the socket: a message then never crosses between threads, and each crossing cost a wait
for Python's GIL while the other thread was busy (measured in docs/performance.md).
"""

from __future__ import annotations

import logging
import queue
import select
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client

log = logging.getLogger(__name__)

ANSWERS_IN_FLIGHT = 1000  # QoS 1 messages sent and not yet acknowledged, at most (if the broker allows as many)
INBOX_LIMIT = 10_000  # messages received and not yet handled, at most; more are dropped (logged)


class _TurnClient(mqtt.Client):
    """A paho client that calls `after_read` at the end of every turn of its network loop (paho calls
    `loop_misc` there, after reading what the socket held and writing what was queued)."""

    after_read: Callable[[], None] | None = None

    def loop_misc(self) -> MQTTErrorCode:
        if self.after_read is not None:
            self.after_read()
        return super().loop_misc()


class InboxWorker:
    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        subscription: str,
        *,
        name: str,
        max_batch: int,
        if_full: str,
        on_network_thread: bool = False,
    ) -> None:
        self.address = address
        self.name = name
        self.max_batch = max_batch
        self.if_full = if_full  # what happens to a message dropped because the inbox is full
        self.on_network_thread = on_network_thread
        self.client = make_client(
            address,
            client_id,
            [(subscription, 1)],
            on_message=self._on_message,
            client_class=_TurnClient,
            # Answers of a whole batch go out at once, acknowledged only when the loop next reads.
            max_inflight=ANSWERS_IN_FLIGHT if on_network_thread else None,
        )
        self._inbox: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue(maxsize=INBOX_LIMIT)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._read: list[mqtt.MQTTMessage] = []  # on_network_thread: read in this turn of the network loop
        if on_network_thread:
            self.client.after_read = self._handle_read  # type: ignore[attr-defined]

    def handle(self, batch: list[mqtt.MQTTMessage]) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if not self.on_network_thread:
            self._thread.start()
            connect_and_wait(self.client, self.address)
            return
        # Messages read are acknowledged at once: this caps the ones sent but not yet read, which wait in the
        # socket unstamped while a batch is handled. The rest wait at the broker, where requests expire.
        connect_and_wait(self.client, self.address, receive_maximum=self.max_batch)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        if not self.on_network_thread:
            self._inbox.put(None)
            self._thread.join(5)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.on_network_thread:
            if len(self._read) < INBOX_LIMIT:
                self._read.append(msg)
            else:
                log.error("%s inbox full; message on %s dropped (%s)", self.name, msg.topic, self.if_full)
            return
        try:
            self._inbox.put_nowait(msg)
        except queue.Full:
            log.error("%s inbox full; message on %s dropped (%s)", self.name, msg.topic, self.if_full)

    def _handle_read(self) -> None:
        """On the network thread, at the end of a turn of paho's loop: what was read, in batches of at most
        max_batch. Before each batch, everything waiting on the socket is read, so each message is stamped with
        its arrival time (to within one batch: the shedding of stale requests relies on it); after each batch,
        its answers are written at once rather than at the next turn."""
        self._read_waiting()
        while self._read:
            batch, self._read = self._read[: self.max_batch], self._read[self.max_batch :]
            self._handle_safely(batch)
            self.client.loop_write()
            self._read_waiting()

    def _read_waiting(self) -> None:
        while len(self._read) < INBOX_LIMIT:
            sock = self.client.socket()
            if sock is None or not select.select([sock], [], [], 0)[0]:
                return
            if self.client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:  # link lost: paho's loop sees to it
                return

    def _handle_safely(self, batch: list[mqtt.MQTTMessage]) -> None:
        try:
            self.handle(batch)
        except Exception:  # a fault in one batch must not stop the service
            log.exception("%s: a batch of %d messages failed", self.name, len(batch))

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
            self._handle_safely(batch)


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
