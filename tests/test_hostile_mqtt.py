"""Hostile clients on the real broker (the suite's Mosquitto with the generated ACL).

- A rogue holding valid reader credentials cannot move a relay: not by publishing a genuine allow on a gate it
  does not belong to, not by replaying a genuine allow through another reader of the same gate, not by
  rewriting an allow for another reader. A simulated turnstile on libosdp counts the pulses. (The basic
  forgeries, expiry and same-reader replay are in tests/test_bridge_mqtt.py; the ACL itself in
  tests/test_broker_acl.py.)
- An oversized request reaches the decision service and is dropped: no answer, no audit entry.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import select

from firmware_bridge import display
from firmware_bridge.bridge import epoch_ms
from firmware_bridge.sim import SimulatedGate, start_simulated_gate
from gateway import contract
from gateway.broker_setup import GATEWAY_USER, BrokerFiles, bridge_user
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.decision_worker import DecisionWorker
from gateway.decisions import DecisionService
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client
from gateway.site import Site
from tests.factories import badged_holder
from tests.mqtt_helpers import Listener

GATE = "STA-G1"
WAIT_S = 5.0


def _address(broker: BrokerFiles, user: str) -> BrokerAddress:
    return BrokerAddress("127.0.0.1", broker.port, user, broker.password(user))


@pytest.fixture(scope="module")
def decision_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


class Outcomes:
    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def put(self, outcome: Any) -> None:
        with self._cond:
            self.items.append(outcome)
            self._cond.notify_all()

    def wait(self, count: int) -> list[Any]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.items) >= count, WAIT_S), self.items
            return list(self.items)


@pytest.fixture
def gate(site: Site, broker: BrokerFiles, decision_key: Ed25519PrivateKey) -> Iterator[tuple[SimulatedGate, Outcomes]]:
    outcomes = Outcomes()
    public = decision_key.public_key()
    sim = start_simulated_gate(
        site, GATE, {contract.key_id(public): public}, _address(broker, bridge_user(GATE)), on_outcome=outcomes.put
    )
    yield sim, outcomes
    sim.stop()


def _client(broker: BrokerFiles, user: str) -> mqtt.Client:
    address = _address(broker, user)
    client = make_client(address, f"rogue-{user}-{secrets.token_hex(3)}")
    connect_and_wait(client, address)
    return client


def _publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    info = client.publish(topic, payload, qos=1)
    info.wait_for_publish(WAIT_S)


def _answer(
    key: Ed25519PrivateKey, reader: str = "STA-G1-IN", gate: str = GATE, **fields: Any
) -> contract.DecisionAnswer:
    now = epoch_ms()
    unsigned = contract.DecisionAnswer(
        reader=reader,
        gate=gate,
        nonce=secrets.token_hex(16),
        allow=True,
        reason="granted",
        badge="badge-1",
        decided_ms=now,
        expires_ms=now + contract.ANSWER_TTL_MS,
        kid="",
    )
    return contract.sign_answer(replace(unsigned, **fields), key)


def _barrier(broker: BrokerFiles, key: Ed25519PrivateKey, sim: SimulatedGate, outcomes: Outcomes, seen: int) -> None:
    """A genuine deny through the gate's own reader: once shown, every earlier command has been handled."""
    reason = f"barrier_{secrets.token_hex(3)}"
    client = _client(broker, "STA-G1-IN")
    try:
        _publish(client, contract.gate_command_topic(GATE), _answer(key, allow=False, reason=reason).to_json())
    finally:
        client.disconnect()
        client.loop_stop()
    assert outcomes.wait(seen + 1)[seen].action == "deny"
    assert sim.turnstile.wait_until(lambda t: t.text == display.deny_text(reason), WAIT_S)


def test_a_reader_of_another_gate_cannot_open_this_one(broker, decision_key, gate) -> None:  # type: ignore[no-untyped-def]
    sim, outcomes = gate
    genuine = _answer(decision_key).to_json()  # a real allow for STA-G1, captured on the wire
    rogue = _client(broker, "STA-G2-IN")  # valid credentials, wrong gate
    try:
        _publish(rogue, contract.gate_command_topic(GATE), genuine)
    finally:
        rogue.disconnect()
        rogue.loop_stop()
    _barrier(broker, decision_key, sim, outcomes, 0)  # the ACL dropped it: the bridge saw only the barrier
    assert sim.turnstile.relay_pulses == 0


def test_a_genuine_allow_replayed_through_another_reader_of_the_gate_moves_nothing(broker, decision_key, gate) -> None:  # type: ignore[no-untyped-def]
    sim, outcomes = gate
    genuine = _answer(decision_key).to_json()
    owner = _client(broker, "STA-G1-IN")
    try:
        _publish(owner, contract.gate_command_topic(GATE), genuine)
    finally:
        owner.disconnect()
        owner.loop_stop()
    assert outcomes.wait(1)[0].action == "grant"
    assert sim.turnstile.wait_pulses(1, WAIT_S)
    rogue = _client(broker, "STA-G1-OUT")  # the gate's other reader: it may publish commands to this gate
    try:
        _publish(rogue, contract.gate_command_topic(GATE), genuine)
        # ... and the same allow re-addressed to itself: the signature no longer matches.
        readdressed = json.loads(genuine)
        readdressed["reader"] = "STA-G1-OUT"
        readdressed["nonce"] = secrets.token_hex(16)
        _publish(rogue, contract.gate_command_topic(GATE), json.dumps(readdressed).encode())
    finally:
        rogue.disconnect()
        rogue.loop_stop()
    outs = outcomes.wait(3)
    assert [o.action for o in outs[1:3]] == ["ignored", "ignored"]
    _barrier(broker, decision_key, sim, outcomes, 3)
    assert sim.turnstile.relay_pulses == 1


def test_an_allow_signed_for_another_gates_reader_moves_nothing(broker, decision_key, gate) -> None:  # type: ignore[no-untyped-def]
    sim, outcomes = gate
    for_other = _answer(decision_key, reader="STA-G2-IN", gate="STA-G2").to_json()  # genuine, another gate's
    mislabelled = _answer(decision_key, reader="STA-G2-IN").to_json()  # signed, but STA-G2-IN is not on STA-G1
    rogue = _client(broker, "STA-G1-IN")
    try:
        _publish(rogue, contract.gate_command_topic(GATE), for_other)
        _publish(rogue, contract.gate_command_topic(GATE), mislabelled)
    finally:
        rogue.disconnect()
        rogue.loop_stop()
    assert [o.action for o in outcomes.wait(2)[:2]] == ["ignored", "ignored"]
    _barrier(broker, decision_key, sim, outcomes, 2)
    assert sim.turnstile.relay_pulses == 0


# --- oversized requests to the decision service --------------------------------------------------------------


@pytest.fixture
def service(instance, site, broker) -> Iterator[tuple[Any, Any]]:  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    svc = DecisionService(
        site=site,
        keyring=lambda: instance.keyring,
        issuer=instance.settings.issuer,
        sessions=sessions,
        clock=lambda: dt.datetime.now(dt.UTC),
    )
    worker = DecisionWorker(svc, _address(broker, GATEWAY_USER), client_id=f"gw-{secrets.token_hex(3)}")
    worker.start()
    badge = badged_holder(instance, site, ["STADIUM-PERIMETER"], dt.datetime.now(dt.UTC))
    yield badge, sessions
    worker.stop()


def _request(client: mqtt.Client, reader: str, payload: bytes, nonce: str) -> None:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = contract.answer_topic(reader)
    props.CorrelationData = nonce.encode()
    client.publish(contract.request_topic(reader), payload, qos=1, properties=props).wait_for_publish(WAIT_S)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_oversized_request_is_dropped_unanswered_and_unlogged(broker, service) -> None:  # type: ignore[no-untyped-def]
    badge, sessions = service
    reader = "STA-G1-IN"
    big_nonce, small_nonce = secrets.token_hex(16), secrets.token_hex(16)
    oversized = json.dumps(
        {"v": 1, "reader": reader, "nonce": big_nonce, "token": badge.token, "sent_ms": 0, "pad": "x" * 5000}
    ).encode()
    assert len(oversized) > contract.MAX_PAYLOAD_BYTES
    with pytest.raises(contract.ContractError, match="exceeds"):
        contract.DecisionRequest.from_json(oversized)
    normal = contract.DecisionRequest(reader=reader, nonce=small_nonce, token=badge.token, sent_ms=0).to_json()
    with Listener(broker, reader, [contract.answer_topic(reader)]) as answers:
        client = _client(broker, reader)
        try:
            _request(client, reader, oversized, big_nonce)
            _request(client, reader, normal, small_nonce)  # after it: once answered, the big one was handled
        finally:
            client.disconnect()
            client.loop_stop()
        assert answers.wait_for(lambda m: json.loads(m.payload)["nonce"] == small_nonce) is not None
        assert [json.loads(m.payload)["nonce"] for m in answers.messages] == [small_nonce]
    with sessions() as s:
        refs = list(s.scalars(select(AuditEntry.ref).where(AuditEntry.kind == "decision")))
    assert refs == [small_nonce]
