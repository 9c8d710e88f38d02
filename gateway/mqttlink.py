"""One way to build a paho-mqtt 2.x client for every process: MQTT v5, TCP_NODELAY, credentials, last will.

Importable by readers and bridges (no Flask, no SQLAlchemy). Subscriptions are renewed in on_connect, so a
reconnect restores them.
"""

from __future__ import annotations

import copy
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str
    password: str

    @classmethod
    def from_password_file(cls, host: str, port: int, username: str, password_file: Path) -> BrokerAddress:
        return cls(host, port, username, password_file.read_text(encoding="utf-8").strip())


_REPLY_TEMPLATE = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]


def reply_properties(correlation: bytes) -> Properties:
    """PUBLISH properties carrying only CorrelationData, for an answer to a request. paho builds a Properties
    object from scratch and checks each assignment against its whole table, about 17 us, and the decision worker
    needs one per answer: this copies an empty one and sets the single, always valid, field (about 3 us)."""
    props = copy.copy(_REPLY_TEMPLATE)
    object.__setattr__(props, "CorrelationData", correlation)  # bytes: valid as paho's Binary Data
    return props


def _nodelay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    # Nagle's algorithm with delayed ACKs turns a sub-millisecond QoS 1 round trip into ~88 ms.
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_client(
    address: BrokerAddress,
    client_id: str,
    subscriptions: Sequence[tuple[str, int]] = (),
    on_message: Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None] | None = None,
    will: tuple[str, bytes] | None = None,
    on_link: Callable[[bool], None] | None = None,
    client_class: type[mqtt.Client] = mqtt.Client,
    max_inflight: int | None = None,
) -> mqtt.Client:
    """A v5 client that (re)subscribes on every connect and reports link changes to `on_link`.

    `max_inflight` raises paho's limit of 20 unacknowledged QoS 1 messages sent; the broker must accept as many
    (the configuration `gateway` writes does)."""
    client = client_class(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(address.username, address.password)
    client.on_socket_open = _nodelay
    if max_inflight is not None:
        client.max_inflight_messages_set(max_inflight)
    client.reconnect_delay_set(min_delay=1, max_delay=4)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    if on_message is not None:
        client.on_message = on_message

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, props: Properties | None) -> None:
        if reason.is_failure:
            return
        # Absent from CONNACK, the broker's Receive Maximum is 65,535 (MQTT v5). paho cannot lower its own limit
        # on an open connection: say so when the broker (not one set up by `gateway broker-config`) wants fewer.
        if max_inflight is not None and getattr(props, "ReceiveMaximum", 65_535) < max_inflight:
            log.warning(
                "the MQTT broker accepts %d unacknowledged messages, %s sends up to %d: set max_inflight_messages",
                props.ReceiveMaximum,  # type: ignore[union-attr]
                client_id,
                max_inflight,
            )
        for topic, qos in subscriptions:
            c.subscribe(topic, qos=qos)
        if on_link is not None:
            on_link(True)

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, _reason: ReasonCode, _p: Properties | None) -> None:
        if on_link is not None:
            on_link(False)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    return client


def connect_and_wait(
    client: mqtt.Client, address: BrokerAddress, timeout_s: float = 10.0, receive_maximum: int | None = None
) -> None:
    """Connect, start the network thread, and wait for the broker's CONNACK (raises on refusal or time-out).

    `receive_maximum` caps the QoS 1 messages the broker sends before they are acknowledged (MQTT v5); the
    rest wait at the broker, where their expiry still applies."""
    done = threading.Event()
    outcome: list[ReasonCode] = []
    previous: Any = client.on_connect  # paho types it as a union of every callback API version

    def on_connect(c: mqtt.Client, u: Any, f: Any, reason: ReasonCode, p: Properties | None) -> None:
        outcome.append(reason)
        if previous is not None:
            previous(c, u, f, reason, p)
        done.set()

    client.on_connect = on_connect
    properties = None
    if receive_maximum is not None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.ReceiveMaximum = receive_maximum
    client.connect_async(address.host, address.port, keepalive=15, properties=properties)
    client.loop_start()
    if not done.wait(timeout_s):
        client.loop_stop()
        raise ConnectionError(f"no answer from the MQTT broker at {address.host}:{address.port} in {timeout_s} s")
    client.on_connect = previous
    if outcome[0].is_failure:
        client.loop_stop()
        raise ConnectionError(f"MQTT broker refused {address.username!r}: {outcome[0]}")


def keep_will_current(client: mqtt.Client, topic: str, will: Callable[[], bytes]) -> None:
    """A retained QoS 1 last will, rebuilt before every (re)connection so that it carries that moment's state."""
    client.will_set(topic, will(), qos=1, retain=True)
    client.on_pre_connect = lambda c, _userdata: c.will_set(topic, will(), qos=1, retain=True)


def publish_final_status(client: mqtt.Client, topic: str, payload: bytes, timeout_s: float = 2.0) -> bool:
    """Publish a retained status and wait for the broker to have it (a clean disconnect discards the will)."""
    info = client.publish(topic, payload, qos=1, retain=True)
    try:
        info.wait_for_publish(timeout_s)
    except (RuntimeError, ValueError):  # not connected, or the queue refused it
        return False
    return info.is_published()
