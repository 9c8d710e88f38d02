"""The bridge's MQTT side: the gates of one controller link, their command topics in, their events out.

Commands: each gate's signed answers arrive on its command topic and go to that gate's GateDriver.

Events: every controller event goes into the outbox (on disk) first. A sender thread publishes, per gate,
the oldest unconfirmed event and waits for the gateway's acknowledgement (sent only after the event is in
the audit) before sending the next, so events reach the audit in their order. With no acknowledgement
within `ack_timeout_s`, or after a reconnect, the same event is sent again; the gateway drops repeats by
gate:seq. While the broker or the gateway is away, events simply wait in the outbox.

Status: the bridge keeps a retained `contract.BridgeStatus` on its own status topic (named by its broker
account): "online" with each gate's controller link, the outbox length and counters when it connects and every
`status_every_s`, "offline" when it stops, and "offline" as its last will, which the broker publishes when the
connection dies without a clean disconnect (power cut, crash, cable pulled).

Nothing here can move the relay except a genuine answer handled by a GateDriver: reconnecting never
replays anything to the controller.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_bridge.controller import ControllerLink
from firmware_bridge.gate import Clock, CommandOutcome, GateDriver, epoch_ms
from firmware_bridge.outbox import EventOutbox
from gateway import contract
from gateway.mqttlink import BrokerAddress, keep_will_current, make_client, publish_final_status
from gateway.site import Gate, Site

log = logging.getLogger(__name__)

__all__ = ["Bridge", "Clock", "CommandOutcome", "epoch_ms"]

ACK_TIMEOUT_S = 2.0  # no acknowledgement by then: send the event again
_TICK_S = 0.1  # grant timeouts and resends are checked this often
RECONNECT_DELAY_S = (1.0, 4.0)
# A controller not connected this long after start is reported offline (sooner would report every start-up).
STARTUP_GRACE_S = 10.0
STATUS_EVERY_S = 5.0  # heartbeat: how often a connected bridge republishes its status
WARN_UNACKED_S = 30.0  # an event unacknowledged this long means the gateway is away: say so, once per event


class Bridge:
    """Serves `gate_codes` (all on `link`) over one MQTT connection as `broker.username`."""

    def __init__(
        self,
        site: Site,
        gate_codes: Sequence[str],
        link: ControllerLink,
        keys: contract.DecisionKeys,
        broker: BrokerAddress,
        outbox: EventOutbox,
        *,
        clock: Clock = epoch_ms,
        on_outcome: Callable[[CommandOutcome], None] | None = None,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        reconnect_delay_s: tuple[float, float] = RECONNECT_DELAY_S,
        startup_grace_s: float = STARTUP_GRACE_S,
        reader_keys: contract.ReaderKeys | None = None,  # readers' offline keys (verify_locally gates)
        status_every_s: float = STATUS_EVERY_S,
    ) -> None:
        if not gate_codes:
            raise ValueError("a bridge serves at least one gate")
        self._outbox = outbox
        self._link = link
        self._broker = broker
        self._ack_timeout_s = ack_timeout_s
        self._reconnect_delay_s = reconnect_delay_s
        self._startup_grace_s = startup_grace_s
        self._started = 0.0
        self._clock = clock
        self.status_topic = contract.bridge_status_topic(broker.username)
        self._status_every_s = status_every_s
        self._status_sent = 0.0  # monotonic time of the last status published
        self.events = 0  # gate events recorded since start (reported in the status)
        self.commands = 0  # signed answers handled since start
        self._counting = threading.Lock()  # both are counted from several threads

        def count_command(outcome: CommandOutcome) -> None:
            with self._counting:
                self.commands += 1
            if on_outcome is not None:
                on_outcome(outcome)

        self.drivers: dict[str, GateDriver] = {}
        for code in gate_codes:
            self.drivers[code] = GateDriver(
                site,
                code,
                link,
                keys,
                self._emitter(code),
                clock=clock,
                on_outcome=count_command,
                reader_keys=reader_keys,
            )
        self._by_address = {d.address: d for d in self.drivers.values()}
        self._by_command_topic = {contract.gate_command_topic(c): d for c, d in self.drivers.items()}
        self._by_ack_topic = {contract.gate_ack_topic(c): c for c in self.drivers}
        self._wake = threading.Condition()
        self._in_flight: dict[str, tuple[int, float]] = {}  # gate -> (seq, monotonic time sent)
        self._first_sent: dict[tuple[str, int], float] = {}  # (gate, seq) -> first send, for the warning
        self._warned: set[tuple[str, int]] = set()
        self._connected = threading.Event()
        self.connections = 0  # how many times the bridge got connected and subscribed
        self._stopping = threading.Event()
        self._sender: threading.Thread | None = None
        self._client: mqtt.Client | None = None

    @property
    def gate(self) -> Gate:
        """The gate, for a bridge that serves exactly one."""
        if len(self.drivers) != 1:
            raise AttributeError("this bridge serves several gates; use .drivers")
        return next(iter(self.drivers.values())).gate

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0, *, require_broker: bool = True) -> None:
        """Listen to the controllers, then connect and wait until every subscription is granted.

        Raises ConnectionError when the broker refuses us or a subscription; when it does not answer in
        `timeout_s`, raises too if `require_broker`, else keeps trying in the background (events wait in
        the outbox meanwhile).
        """
        if self._client is not None:
            return
        self._stopping.clear()
        self._link.add_listener(self._on_controller_event)
        for driver in self.drivers.values():
            if self._link.is_secure(driver.address):
                driver.controller_event("controller_online")  # came up before we listened
        self._started = time.monotonic()
        self._sender = threading.Thread(target=self._send_loop, name="bridge-events", daemon=True)
        self._sender.start()

        subscriptions = [(t, 1) for t in (*self._by_command_topic, *self._by_ack_topic)]
        granted = threading.Event()
        answered = threading.Event()
        refused: list[str] = []
        pending = {"count": 0}

        def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None) -> None:
            if reason.is_failure:
                refused.append(f"connection refused: {reason}")
                answered.set()

        def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Properties | None) -> None:
            refused.extend(f"subscription refused: {rc}" for rc in codes if rc.is_failure)
            pending["count"] += 1
            if pending["count"] >= len(subscriptions):
                pending["count"] = 0
                granted.set()
                answered.set()
                self._on_link(True)

        client = make_client(
            self._broker,
            client_id=f"{self._broker.username}-{secrets.token_hex(4)}",
            subscriptions=subscriptions,
            on_message=self._on_message,
            on_link=lambda up: None if up else self._on_link(False),
        )
        client.reconnect_delay_set(*self._reconnect_delay_s)  # type: ignore[arg-type]  # paho accepts floats
        link_connect: Any = client.on_connect

        def on_connect_both(c: mqtt.Client, u: Any, f: Any, reason: ReasonCode, p: Properties | None) -> None:
            pending["count"] = 0
            on_connect(c, u, f, reason, p)
            link_connect(c, u, f, reason, p)

        client.on_connect = on_connect_both
        client.on_subscribe = on_subscribe
        keep_will_current(client, self.status_topic, lambda: self.status("offline").to_json())
        self._client = client
        client.connect_async(self._broker.host, self._broker.port, keepalive=15)
        client.loop_start()
        if answered.wait(timeout_s) and granted.is_set() and not refused:
            log.info("bridge for %s listening as %s", ", ".join(self.drivers), self._broker.username)
            return
        if refused or require_broker:
            self.stop()
            why = ", ".join(refused) or f"no answer from {self._broker.host}:{self._broker.port} in {timeout_s} s"
            raise ConnectionError(f"bridge for {', '.join(self.drivers)}: {why}")
        log.warning("broker not reachable yet; events wait in the outbox until it is")

    def stop(self) -> None:
        client, self._client = self._client, None
        self._link.remove_listener(self._on_controller_event)
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        if self._sender is not None:
            self._sender.join(5)  # its heartbeat must not follow our "offline"
            self._sender = None
        # A clean disconnect discards the will: say "offline" ourselves, with the final outbox length.
        if client is not None and self._connected.is_set():
            final = self.status("offline").to_json()
            if not publish_final_status(client, self.status_topic, final):
                log.warning("bridge: final status not sent")
        self._connected.clear()
        if client is not None:
            client.disconnect()
            client.loop_stop()

    # --- messages in -------------------------------------------------------------------------------

    def _on_link(self, up: bool) -> None:
        with self._wake:
            if up:
                self.connections += 1
                self._connected.set()
                self._in_flight.clear()  # whatever was in flight may be lost: send it again now
                log.info("bridge: connected to the broker")
            elif self._connected.is_set():
                self._connected.clear()
                log.warning("bridge: lost the broker; events wait in the outbox")
            self._wake.notify_all()
        if up and not self._stopping.is_set():
            self._publish_status("online")  # replaces the will the broker may have published meanwhile

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        # An exception here would end paho's network thread, and with it the bridge.
        try:
            driver = self._by_command_topic.get(message.topic)
            if driver is not None:
                driver.handle_command(bytes(message.payload), retained=bool(message.retain))
            elif message.topic in self._by_ack_topic:
                self._on_ack(self._by_ack_topic[message.topic], bytes(message.payload))
            else:
                log.warning("bridge: message on unexpected topic %s", message.topic)
        except Exception:
            log.exception("bridge: failed to handle a message on %s", message.topic)

    def _on_ack(self, gate: str, payload: bytes) -> None:
        try:
            ack = contract.GateEventAck.from_json(payload)
        except contract.ContractError as exc:
            log.warning("gate %s: ignored acknowledgement: %s", gate, exc)
            return
        if ack.gate != gate:
            log.warning("gate %s: acknowledgement names gate %s; ignored", gate, ack.gate)
            return
        self._outbox.confirm(gate, ack.seq)
        with self._wake:
            self._first_sent.pop((gate, ack.seq), None)
            self._warned.discard((gate, ack.seq))
            if self._in_flight.get(gate, (None, 0.0))[0] == ack.seq:
                del self._in_flight[gate]
            self._wake.notify_all()

    # --- events out --------------------------------------------------------------------------------

    def _on_controller_event(self, address: int, kind: str) -> None:
        driver = self._by_address.get(address)
        if driver is not None:
            driver.controller_event(kind)

    def _emitter(self, gate: str) -> Callable[[str, str], None]:
        def emit(kind: str, nonce: str) -> None:
            event = self._outbox.add(gate, kind, nonce)
            with self._counting:
                self.events += 1
            log.info("gate %s: %s (seq %d%s)", gate, kind, event.seq, f", answer {nonce}" if nonce else "")
            with self._wake:
                self._wake.notify_all()

        return emit

    def _send_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                starting = time.monotonic() - self._started < self._startup_grace_s
                for driver in self.drivers.values():
                    driver.tick()
                    if not starting:
                        driver.report_controller_state_once()
                if self._connected.is_set():
                    for gate in self.drivers:
                        self._send_head(gate)
                    if time.monotonic() - self._status_sent >= self._status_every_s:
                        self._publish_status("online")
            except Exception:
                log.exception("bridge: event sender failed; retrying")
            with self._wake:
                if not self._stopping.is_set():
                    self._wake.wait(_TICK_S)

    def _send_head(self, gate: str) -> None:
        head = self._outbox.head(gate)
        now = time.monotonic()
        with self._wake:
            if head is None:
                self._in_flight.pop(gate, None)
                return
            sent = self._in_flight.get(gate)
            if sent is not None and sent[0] == head.seq and now - sent[1] < self._ack_timeout_s:
                return
            self._in_flight[gate] = (head.seq, now)
            waited = now - self._first_sent.setdefault((gate, head.seq), now)
            warn = waited >= WARN_UNACKED_S and (gate, head.seq) not in self._warned
            if warn:
                self._warned.add((gate, head.seq))
        client = self._client
        if client is None:
            return
        if warn:
            log.warning(
                "gate %s: the gateway has not acknowledged event %d for %.0f s; %d event(s) waiting in the outbox",
                gate,
                head.seq,
                waited,
                len(self._outbox),
            )
        if waited:
            log.debug("gate %s: sending event %d again", gate, head.seq)
        info = client.publish(contract.gate_event_topic(gate), head.to_json(), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.debug("gate %s: publish of event %d deferred: %s", gate, head.seq, mqtt.error_string(info.rc))

    # --- status ------------------------------------------------------------------------------------

    def status(self, state: str) -> contract.BridgeStatus:
        """What the bridge says about itself now: each gate's controller link, the outbox, the counters."""
        return contract.BridgeStatus(
            bridge=self._broker.username,
            state=state,
            sent_ms=self._clock(),
            controllers={
                code: "up" if self._link.is_secure(driver.address) else "down" for code, driver in self.drivers.items()
            },
            outbox=len(self._outbox),
            events=self.events,
            commands=self.commands,
        )

    def _publish_status(self, state: str) -> None:
        client = self._client
        if client is None:
            return
        self._status_sent = time.monotonic()
        info = client.publish(self.status_topic, self.status(state).to_json(), qos=1, retain=True)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.debug("bridge: status deferred: %s", mqtt.error_string(info.rc))
