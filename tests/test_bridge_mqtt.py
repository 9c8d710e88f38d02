"""The whole gate over the real broker: signed answers in, relay pulses and gate events out.

A reader account publishes the answers, the suite's Mosquitto applies the site ACL, and a simulated turnstile
on libosdp records what the bridge made it do. To prove that a refused answer moved nothing, each such test
then sends a deny as a barrier: OSDP commands arrive in order, so once the barrier's text is on the display
any pulse the refused answer could have caused would already have been counted.
"""

from __future__ import annotations

import itertools
import json
import queue
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_bridge import display
from firmware_bridge.bridge import Bridge, CommandOutcome, epoch_ms
from firmware_bridge.channels import channel_pair
from firmware_bridge.controller import ControllerLink
from firmware_bridge.outbox import EventOutbox
from firmware_bridge.sim import SimulatedGate, start_simulated_gate
from gateway import contract
from gateway.broker_setup import GATEWAY_USER, BrokerFiles, bridge_user
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client
from gateway.site import Site

GATE = "STA-G1"
READER = "STA-G1-IN"
WAIT_S = 5.0  # generous: every wait returns as soon as its condition holds
_barriers = itertools.count(1)


@pytest.fixture(scope="module")
def decision_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _address(broker: BrokerFiles, user: str) -> BrokerAddress:
    return BrokerAddress("127.0.0.1", broker.port, user, broker.password(user))


class Outcomes:
    def __init__(self) -> None:
        self._q: queue.Queue[CommandOutcome] = queue.Queue()

    def put(self, outcome: CommandOutcome) -> None:
        self._q.put(outcome)

    def next(self) -> CommandOutcome:
        return self._q.get(timeout=WAIT_S)


@pytest.fixture
def outcomes() -> Outcomes:
    return Outcomes()


@pytest.fixture
def gate(
    site: Site, broker: BrokerFiles, decision_key: Ed25519PrivateKey, outcomes: Outcomes
) -> Iterator[SimulatedGate]:
    public = decision_key.public_key()
    sim = start_simulated_gate(
        site,
        GATE,
        {contract.key_id(public): public},
        _address(broker, bridge_user(GATE)),
        held_open_s=0.3,
        on_outcome=outcomes.put,
    )
    yield sim
    sim.stop()


def _connected(address: BrokerAddress, subscriptions: Sequence[tuple[str, int]] = (), **kw: Any) -> mqtt.Client:
    """A connected client whose subscriptions (if any) are granted."""
    granted = threading.Event()
    client = make_client(address, f"test-{secrets.token_hex(4)}", subscriptions, **kw)
    client.on_subscribe = lambda *_args: granted.set()
    connect_and_wait(client, address)
    if subscriptions:
        assert granted.wait(WAIT_S), "subscription not granted"
    return client


@pytest.fixture
def reader(broker: BrokerFiles) -> Iterator[mqtt.Client]:
    client = _connected(_address(broker, READER))
    yield client
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def gate_events(broker: BrokerFiles) -> Iterator[queue.Queue[contract.GateEvent]]:
    """What the gateway hears on the gate's event topic; each event is acknowledged, as the gateway does."""
    events: queue.Queue[contract.GateEvent] = queue.Queue()
    seen: set[int] = set()

    def on_message(c: mqtt.Client, _u: Any, m: mqtt.MQTTMessage) -> None:
        event = contract.GateEvent.from_json(m.payload)
        c.publish(contract.gate_ack_topic(event.gate), contract.GateEventAck(event.gate, event.seq).to_json(), qos=1)
        if event.seq not in seen:  # a repeat (sent again before our acknowledgement arrived) is the same event
            seen.add(event.seq)
            events.put(event)

    client = _connected(_address(broker, GATEWAY_USER), [(contract.gate_event_topic(GATE), 1)], on_message=on_message)
    yield events
    client.disconnect()
    client.loop_stop()


def _answer(key: Ed25519PrivateKey, **fields: Any) -> contract.DecisionAnswer:
    now = epoch_ms()
    unsigned = contract.DecisionAnswer(
        reader=READER,
        gate=GATE,
        nonce=secrets.token_hex(16),
        allow=True,
        reason="granted",
        badge="badge-1",
        decided_ms=now,
        expires_ms=now + contract.ANSWER_TTL_MS,
        kid="",
    )
    return contract.sign_answer(replace(unsigned, **fields), key)


def _send(reader: mqtt.Client, payload: bytes) -> None:
    info = reader.publish(contract.gate_command_topic(GATE), payload, qos=1)
    info.wait_for_publish(WAIT_S)
    assert info.is_published()


def _barrier(reader: mqtt.Client, key: Ed25519PrivateKey, gate: SimulatedGate, outcomes: Outcomes) -> None:
    """Send a deny and wait until the turnstile shows it: every earlier OSDP command has arrived by then."""
    reason = f"barrier_{next(_barriers)}"
    _send(reader, _answer(key, allow=False, reason=reason).to_json())
    assert outcomes.next().action == "deny"
    assert gate.turnstile.wait_until(lambda t: t.text == display.deny_text(reason), WAIT_S)


def test_signed_allow_pulses_the_relay_exactly_once_and_shows_green(
    gate: SimulatedGate, reader: mqtt.Client, decision_key: Ed25519PrivateKey, outcomes: Outcomes
) -> None:
    answer = _answer(decision_key)
    _send(reader, answer.to_json())

    outcome = outcomes.next()
    assert (outcome.action, outcome.nonce, outcome.detail) == ("grant", answer.nonce, "")
    assert gate.turnstile.wait_pulses(1, WAIT_S)
    assert gate.turnstile.wait_until(lambda t: "green" in t.led_history, WAIT_S)
    _barrier(reader, decision_key, gate, outcomes)
    assert gate.turnstile.relay_pulses == 1
    assert gate.turnstile.pulse_durations_ms == [gate.bridge.gate.relay_pulse_ms]


def test_signed_deny_shows_red_and_never_pulses(
    gate: SimulatedGate, reader: mqtt.Client, decision_key: Ed25519PrivateKey, outcomes: Outcomes
) -> None:
    _send(reader, _answer(decision_key, allow=False, reason="revoked").to_json())

    assert outcomes.next().action == "deny"
    assert gate.turnstile.wait_until(lambda t: t.text == "REFUSE/DENIED REVOQUE/REVOKED", WAIT_S)
    assert gate.turnstile.led_history == ["red"]
    assert gate.turnstile.relay_pulses == 0


def _forged(key: Ed25519PrivateKey) -> bytes:
    """Signed by an attacker's key but claiming the gateway's key id."""
    forged = _answer(Ed25519PrivateKey.generate())
    return replace(forged, kid=contract.key_id(key.public_key())).to_json()


def _tampered(key: Ed25519PrivateKey) -> bytes:
    """A genuine deny turned into an allow."""
    return replace(_answer(key, allow=False, reason="revoked"), allow=True).to_json()


def _unknown_key(_key: Ed25519PrivateKey) -> bytes:
    return _answer(Ed25519PrivateKey.generate()).to_json()


def _expired(key: Ed25519PrivateKey) -> bytes:
    now = epoch_ms()
    return _answer(key, decided_ms=now - 10_000, expires_ms=now - 5_000).to_json()


def _other_gate(key: Ed25519PrivateKey) -> bytes:
    return _answer(key, gate="STA-G2").to_json()


def _reader_not_on_gate(key: Ed25519PrivateKey) -> bytes:
    return _answer(key, reader="STA-G2-IN").to_json()


def _too_long_lived(key: Ed25519PrivateKey) -> bytes:
    now = epoch_ms()
    return _answer(key, decided_ms=now, expires_ms=now + 3_600_000).to_json()


def _malformed(key: Ed25519PrivateKey) -> bytes:
    data = {"v": contract.VERSION, **asdict(_answer(key)), "allow": "yes"}
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_forged, "bad signature"),
        (_tampered, "bad signature"),
        (_unknown_key, "unknown decision key"),
        (_expired, "expired"),
        (_other_gate, "for gate 'STA-G2'"),
        (_reader_not_on_gate, "reader 'STA-G2-IN' is not at gate"),
        (_too_long_lived, "lives longer"),
        (_malformed, "malformed"),
    ],
    ids=lambda v: getattr(v, "__name__", "").lstrip("_") or None,
)
def test_answers_that_must_not_be_acted_on_never_pulse(
    gate: SimulatedGate,
    reader: mqtt.Client,
    decision_key: Ed25519PrivateKey,
    outcomes: Outcomes,
    make: Any,
    why: str,
) -> None:
    _send(reader, make(decision_key))

    outcome = outcomes.next()
    assert outcome.action == "ignored"
    assert why in outcome.detail
    _barrier(reader, decision_key, gate, outcomes)
    assert gate.turnstile.relay_pulses == 0
    assert "green" not in gate.turnstile.led_history


def test_replayed_allow_never_pulses_again(
    gate: SimulatedGate, reader: mqtt.Client, decision_key: Ed25519PrivateKey, outcomes: Outcomes
) -> None:
    payload = _answer(decision_key).to_json()
    _send(reader, payload)
    assert outcomes.next().action == "grant"
    assert gate.turnstile.wait_pulses(1, WAIT_S)

    _send(reader, payload)
    replay = outcomes.next()
    assert replay.action == "ignored"
    assert "replay" in replay.detail
    _barrier(reader, decision_key, gate, outcomes)
    assert gate.turnstile.relay_pulses == 1


def test_retained_allow_is_not_acted_on_by_a_restarted_bridge(
    gate: SimulatedGate, reader: mqtt.Client, decision_key: Ed25519PrivateKey, outcomes: Outcomes
) -> None:
    topic = contract.gate_command_topic(GATE)
    try:
        info = reader.publish(topic, _answer(decision_key).to_json(), qos=1, retain=True)
        info.wait_for_publish(WAIT_S)
        assert outcomes.next().action == "grant"  # delivered live, it is an ordinary fresh answer
        assert gate.turnstile.wait_pulses(1, WAIT_S)

        gate.bridge.stop()
        gate.bridge.start()  # the broker hands the stored copy to the new subscription

        stored = outcomes.next()
        assert stored.action == "ignored"
        assert "retained" in stored.detail
    finally:
        reader.publish(topic, b"", qos=1, retain=True).wait_for_publish(WAIT_S)  # clear it for other tests
    assert "malformed" in outcomes.next().detail  # the bridge hears the clearing message too
    _barrier(reader, decision_key, gate, outcomes)
    assert gate.turnstile.relay_pulses == 1


def _next_event(events: queue.Queue[contract.GateEvent], kind: str) -> contract.GateEvent:
    """The next event of `kind`, skipping others; fails after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = events.get(timeout=left)
        except queue.Empty:
            break
        if event.kind == kind:
            return event
    raise AssertionError(f"no {kind} event within {WAIT_S} s")


def test_passage_after_a_grant_is_published_with_the_grants_nonce(
    gate: SimulatedGate,
    reader: mqtt.Client,
    decision_key: Ed25519PrivateKey,
    outcomes: Outcomes,
    gate_events: queue.Queue[contract.GateEvent],
) -> None:
    answer = _answer(decision_key)
    _send(reader, answer.to_json())
    assert outcomes.next().action == "grant"
    assert gate.turnstile.wait_state(gate.turnstile.state.RELEASED, WAIT_S)

    assert gate.turnstile.pass_person()

    event = _next_event(gate_events, "passage")
    assert (event.gate, event.nonce) == (GATE, answer.nonce)
    gate.turnstile.force()
    forced = _next_event(gate_events, "door_forced")
    assert forced.nonce == ""
    assert forced.seq > event.seq


def test_alarms_are_published(
    gate: SimulatedGate,
    reader: mqtt.Client,
    decision_key: Ed25519PrivateKey,
    outcomes: Outcomes,
    gate_events: queue.Queue[contract.GateEvent],
) -> None:
    gate.turnstile.tamper()
    assert _next_event(gate_events, "tamper").gate == GATE
    gate.turnstile.reset()

    _send(reader, _answer(decision_key).to_json())
    assert outcomes.next().action == "grant"
    assert gate.turnstile.wait_state(gate.turnstile.state.RELEASED, WAIT_S)
    assert gate.turnstile.hold_open()
    assert _next_event(gate_events, "door_held_open").gate == GATE


def test_bridge_refuses_a_gate_whose_controller_is_not_on_its_link(
    site: Site, broker: BrokerFiles, decision_key: Ed25519PrivateKey
) -> None:
    cp_channel, _ = channel_pair()
    link = ControllerLink(cp_channel, {99: secrets.token_bytes(16)})
    public = decision_key.public_key()
    with pytest.raises(ValueError, match="not on the link"):
        keys = {contract.key_id(public): public}
        Bridge(site, [GATE], link, keys, _address(broker, bridge_user(GATE)), EventOutbox())


def test_the_acl_confines_each_bridge_account_to_its_own_gates(site: Site, broker: BrokerFiles) -> None:
    """A bus bridge speaks for its bus's gates only, a gate bridge for its gate only; the broker drops the rest."""
    from gateway.broker_setup import bus_bridge_user
    from tests.mqtt_helpers import Listener

    north, south = "STA-G1", "STA-G4"  # on stadium-north and stadium-south in zones.yaml
    topics = [contract.gate_event_topic(north), contract.gate_event_topic(south)]
    with Listener(broker, GATEWAY_USER, topics) as gateway:
        for count, user in enumerate((bus_bridge_user("stadium-north"), bridge_user(north)), start=1):
            bridge = _connected(_address(broker, user))
            try:
                for gate in (south, north):  # the allowed one last: once it arrives, the other would have too
                    event = contract.GateEvent(gate=gate, kind="tamper", seq=count, at_ms=epoch_ms())
                    bridge.publish(contract.gate_event_topic(gate), event.to_json(), qos=1).wait_for_publish(WAIT_S)
                arrived = gateway.wait_for(
                    lambda m, n=count: m.topic == contract.gate_event_topic(north)
                    and contract.GateEvent.from_json(m.payload).seq == n,
                    WAIT_S,
                )
                assert arrived is not None, user
            finally:
                bridge.disconnect()
                bridge.loop_stop()
        assert [m.topic for m in gateway.messages] == [contract.gate_event_topic(north)] * 2
