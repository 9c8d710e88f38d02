"""A small MQTT listener for tests: collects what a given account receives, on the suite's real Mosquitto."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from gateway.broker_setup import BrokerFiles
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client


class Listener:
    def __init__(self, broker: BrokerFiles, user: str, topics: list[str], password: str | None = None) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self.address = BrokerAddress("127.0.0.1", broker.port, user, password or broker.password(user))
        self.client = make_client(
            self.address, f"test-{user}-{secrets.token_hex(3)}", [(t, 1) for t in topics], on_message=self._on_message
        )
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *_args: self.subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def __enter__(self) -> Listener:
        connect_and_wait(self.client, self.address)
        self.subscribed.wait(5)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, predicate: Callable[[mqtt.MQTTMessage], bool], timeout: float = 10.0) -> mqtt.MQTTMessage | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.messages:
                    if predicate(msg):
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
