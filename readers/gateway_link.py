"""The reader's link to the gateway: MQTT v5 request/response, accepting only genuine answers to its own requests.

An answer counts only if it is signed by a pinned decision key, names this reader, carries the nonce of a
request still pending here, and has not expired. Anything else is logged and dropped.

The link also keeps the reader's retained status (`contract.ReaderStatus`): "online" with the counters when
it connects and on every heartbeat, "offline" when it stops, and "offline" as its last will, which the broker
publishes when the connection dies without a clean disconnect (power cut, crash, cable pulled).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway import contract
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0  # how often a connected reader republishes its status with fresh counters
_STOP_PUBLISH_TIMEOUT_S = 2.0


class Counters(Protocol):
    """What the heartbeat reports; the reader agent has these attributes."""

    @property
    def frames(self) -> int: ...

    @property
    def decodes(self) -> int: ...

    @property
    def decisions(self) -> int: ...

    @property
    def offline_queue(self) -> int: ...


class _NoCounters:
    frames = decodes = decisions = offline_queue = 0


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: contract.DecisionAnswer | None = None
        self.sent = time.monotonic()


class GatewayLink:
    def __init__(
        self,
        address: BrokerAddress,
        reader: str,
        gate: str,
        decision_keys: contract.DecisionKeys,
        clock_ms: Callable[[], int],
        heartbeat_s: float = HEARTBEAT_S,
        on_site_message: Callable[[str, bytes], None] | None = None,
        on_offline_ack: Callable[[bytes], None] | None = None,
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
        self.heartbeat_s = heartbeat_s
        self._counters: Counters = _NoCounters()
        self._quiet = threading.Event()  # set: the heartbeat stops
        self._heartbeat: threading.Thread | None = None
        self.status_topic = contract.reader_status_topic(reader)
        # Offline operation: the retained site messages (kept for deciding offline) and upload acknowledgements.
        self.on_site_message = on_site_message
        self.on_offline_ack = on_offline_ack
        self._answer_topic = contract.answer_topic(reader)
        self._ack_topic = contract.offline_ack_topic(reader)
        subscriptions = [(self._answer_topic, 1)]
        if on_site_message is not None:
            subscriptions += [(topic, 1) for topic in contract.SITE_TOPICS.values()]
        if on_offline_ack is not None:
            subscriptions.append((self._ack_topic, 1))
        self.client = make_client(
            address,
            f"reader-{reader}",
            subscriptions,
            on_message=self._on_message,
            will=(self.status_topic, self._status("offline").to_json()),
            on_link=self._on_link,
        )
        # Each (re)connection carries a will with that moment's counters.
        self.client.on_pre_connect = lambda client, _userdata: client.will_set(
            self.status_topic, self._status("offline").to_json(), qos=1, retain=True
        )

    def start(self, counters: Counters | None = None) -> None:
        """Connect (raises ConnectionError), then publish the status with `counters` every heartbeat."""
        if counters is not None:
            self._counters = counters
        connect_and_wait(self.client, self.address)
        self._heartbeat = threading.Thread(target=self._beat, name=f"heartbeat-{self.reader}", daemon=True)
        self._heartbeat.start()

    def stop(self) -> None:
        """Say "offline" with the final counters (a clean disconnect discards the will), then disconnect."""
        self._stopping = True
        self._quiet.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self.online:
            info = self.publish_status("offline")
            try:
                info.wait_for_publish(_STOP_PUBLISH_TIMEOUT_S)
            except (RuntimeError, ValueError) as exc:
                log.warning("reader %s: final status not sent: %s", self.reader, exc)
        self.client.disconnect()
        self.client.loop_stop()

    def publish_status(self, state: str) -> mqtt.MQTTMessageInfo:
        """Publish this reader's status, retained, so that whoever subscribes later sees the latest."""
        return self.client.publish(self.status_topic, self._status(state).to_json(), qos=1, retain=True)

    def _status(self, state: str) -> contract.ReaderStatus:
        counters = self._counters
        return contract.ReaderStatus(
            reader=self.reader,
            state=state,
            at_ms=self.clock_ms(),
            frames=counters.frames,
            decodes=counters.decodes,
            decisions=counters.decisions,
            offline_queue=counters.offline_queue,
            mode=getattr(counters, "mode", "online"),  # "offline" while deciding by the offline policy
        )

    def _beat(self) -> None:
        while not self._quiet.wait(self.heartbeat_s):
            if self.online:
                self.publish_status("online")

    def _on_link(self, up: bool) -> None:
        if up != self.online and not self._stopping:
            log.warning("reader %s: gateway link %s", self.reader, "up" if up else "DOWN")
        self.online = up
        if up and not self._stopping:
            self.publish_status("online")  # replaces the will the broker may have published meanwhile

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
        props.MessageExpiryInterval = contract.REQUEST_EXPIRY_S
        try:
            self.client.publish(
                contract.request_topic(self.reader), request.to_json(), qos=1, properties=props
            )
            pending.done.wait(timeout_s)
        finally:
            with self._lock:
                self._pending.pop(nonce, None)
        return pending.answer

    def forward_to_bridge(self, answer: contract.DecisionAnswer | contract.OfflineAnswer) -> None:
        """The bridge checks the signature (the gateway's, or this reader's offline key) before it moves anything."""
        self.client.publish(contract.gate_command_topic(self.gate), answer.to_json(), qos=1)

    def upload(self, decision: contract.OfflineDecision) -> bool:
        """Send one offline decision to the gateway; False when not connected (it stays queued anyway)."""
        info = self.client.publish(contract.offline_upload_topic(self.reader), decision.to_json(), qos=1)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # An exception here would end paho's network thread, and with it the reader's link.
        try:
            if msg.topic == self._answer_topic:
                self._on_answer(client, userdata, msg)
            elif msg.topic == self._ack_topic and self.on_offline_ack is not None:
                self.on_offline_ack(bytes(msg.payload))
            elif self.on_site_message is not None:
                self.on_site_message(msg.topic, bytes(msg.payload))
        except Exception:
            log.exception("reader %s: failed to handle a message on %s", self.reader, msg.topic)

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
        # Judge the answer's freshness on the gateway's clock, not this reader's (which may be minutes off):
        # the gateway decided after the request left, so decided_ms + time since sending is never too early.
        gateway_now_ms = answer.decided_ms + int((time.monotonic() - pending.sent) * 1000)
        problem = contract.answer_problem(
            answer, self.keys, reader=self.reader, nonce=answer.nonce, gate=self.gate, now_ms=gateway_now_ms
        )
        if problem is not None:
            self.rejected += 1
            log.warning("reader %s: answer dropped: %s", self.reader, problem)
            return
        pending.answer = answer
        pending.done.set()
