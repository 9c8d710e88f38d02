"""The bridge's retained status and last will: the message schema, the ACL, and on a real Mosquitto with a
simulated turnstile on libosdp the online status at connect, heartbeats carrying the outbox length, the clean
"offline" at the end, and the will when a bridge process dies without a word."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from firmware_bridge.sim import SimulatedGate, start_simulated_gate
from gateway import alarms, contract
from gateway.broker_setup import GATEWAY_USER, BrokerFiles, acl_text, bridge_user, bus_bridge_user
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client
from gateway.reader_monitor import ReaderMonitor
from gateway.site import Site
from tests.mqtt_helpers import Listener

ROOT = Path(__file__).resolve().parent.parent
GATE = "STA-G1"
BRIDGE = bridge_user(GATE)
WAIT_S = 10.0  # generous: a slow CI machine, never a timing assertion


def status(**changes: Any) -> contract.BridgeStatus:
    fields: dict[str, Any] = {
        "bridge": "bridge-bus.stadium-north",
        "state": "online",
        "sent_ms": 1_785_094_200_123,
        "controllers": {"STA-G1": "up", "STA-G2": "down"},
        "outbox": 3,
        "events": 17,
        "commands": 9,
    }
    return contract.BridgeStatus(**{**fields, **changes})


# --- the message ----------------------------------------------------------------------------------------------


def test_status_round_trips_as_compact_json() -> None:
    message = status()
    payload = message.to_json()
    assert json.loads(payload) == {
        "v": 1,
        "bridge": "bridge-bus.stadium-north",
        "state": "online",
        "sent_ms": 1_785_094_200_123,
        "controllers": {"STA-G1": "up", "STA-G2": "down"},
        "outbox": 3,
        "events": 17,
        "commands": 9,
    }
    assert contract.BridgeStatus.from_json(payload) == message
    assert contract.BridgeStatus.from_json(status(state="offline").to_json()).state == "offline"


def _edited(**changes: Any) -> bytes:
    data = json.loads(status().to_json())
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (_edited(state="busy"), "state"),
        (_edited(outbox=-1), "outbox"),
        (_edited(events=True), "events"),
        (_edited(commands=1.5), "commands"),
        (_edited(sent_ms="now"), "sent_ms"),
        (_edited(bridge="bridge STA"), "bridge"),
        (_edited(controllers={}), "controllers"),
        (_edited(controllers=["STA-G1"]), "controllers"),
        (_edited(controllers={"STA-G1": "maybe"}), "controllers"),
        (_edited(controllers={"STA G1": "up"}), "controllers gate"),
        (_edited(controllers={f"G{i}": "up" for i in range(contract.MAX_BRIDGE_GATES + 1)}), "controllers"),
        (_edited(outbox=...), "missing field"),
        (_edited(battery=80), "unknown field"),
        (_edited(v=2), "version"),
        (b"[]", "JSON object"),
        (b"\xff", "JSON"),
    ],
    ids=[
        "unknown-state",
        "negative-outbox",
        "bool-count",
        "float-count",
        "string-time",
        "bad-bridge-code",
        "no-gates",
        "gates-not-an-object",
        "unknown-link-state",
        "bad-gate-code",
        "too-many-gates",
        "missing-field",
        "unknown-field",
        "other-version",
        "not-an-object",
        "not-utf8",
    ],
)
def test_status_parsing_is_strict(payload: bytes, problem: str) -> None:
    with pytest.raises(contract.ContractError, match=problem):
        contract.BridgeStatus.from_json(payload)


def test_status_topic_names_the_bridge() -> None:
    topic = contract.bridge_status_topic("bridge.CDG-G2")
    assert topic == "acs/v1/bridges/bridge.CDG-G2/status"
    assert contract.bridge_from_status_topic(topic) == "bridge.CDG-G2"
    assert mqtt.topic_matches_sub(contract.BRIDGE_STATUS_SUBSCRIPTION, topic)
    assert not mqtt.topic_matches_sub(contract.READER_STATUS_SUBSCRIPTION, topic)
    for other in ("acs/v1/readers/STA-G1-IN/status", "acs/v1/bridges/a b/status", "acs/v1/bridges/x/event"):
        with pytest.raises(contract.ContractError):
            contract.bridge_from_status_topic(other)


def test_acl_lets_each_bridge_write_only_its_own_status(site: Site) -> None:
    acl = acl_text(site).split("\n\n")
    gateway = next(block for block in acl if block.startswith(f"user {GATEWAY_USER}\n"))
    assert "topic read acs/v1/bridges/+/status" in gateway.splitlines()
    users = [bridge_user(g) for g in site.gates] + [bus_bridge_user("stadium-north")]
    for user in users:
        block = next(block for block in acl if block.startswith(f"user {user}\n"))
        assert f"topic write acs/v1/bridges/{user}/status" in block.splitlines()
        assert sum("/bridges/" in line for line in block.splitlines()) == 1


# --- on a real broker -------------------------------------------------------------------------------------------


def _address(broker: BrokerFiles, user: str) -> BrokerAddress:
    return BrokerAddress("127.0.0.1", broker.port, user, broker.password(user))


def publish_as(broker: BrokerFiles, user: str, topic: str, payload: bytes) -> None:
    address = _address(broker, user)
    client = make_client(address, f"test-{user}-{secrets.token_hex(4)}")
    connect_and_wait(client, address)
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def clear_status(broker: BrokerFiles, bridge: str) -> None:
    """Remove the bridge's retained status (as the bridge), so that no test sees another's."""
    publish_as(broker, bridge, contract.bridge_status_topic(bridge), b"")


class StatusWatcher(Listener):
    """What the gateway account hears on every bridge's status topic."""

    def __init__(self, broker: BrokerFiles) -> None:
        super().__init__(broker, GATEWAY_USER, [contract.BRIDGE_STATUS_SUBSCRIPTION])

    def __enter__(self) -> StatusWatcher:
        super().__enter__()
        return self

    def next_status(
        self, bridge: str, wanted: Callable[[contract.BridgeStatus], bool], after: int = 0
    ) -> tuple[int, contract.BridgeStatus]:
        """The first status of `bridge` at or after message index `after` that satisfies `wanted`, and its index."""
        topic = contract.bridge_status_topic(bridge)

        def match(m: mqtt.MQTTMessage) -> bool:
            return (
                m.topic == topic
                and bool(m.payload)
                and self.messages.index(m) >= after
                and wanted(contract.BridgeStatus.from_json(bytes(m.payload)))
            )

        found = self.wait_for(match, WAIT_S)
        assert found is not None, f"no such status of {bridge} within {WAIT_S} s"
        return self.messages.index(found), contract.BridgeStatus.from_json(bytes(found.payload))


def retained_status(broker: BrokerFiles, bridge: str) -> contract.BridgeStatus:
    """What a subscriber arriving now is told about `bridge`."""
    with StatusWatcher(broker) as late:
        found = late.wait_for(lambda m: m.retain and m.topic == contract.bridge_status_topic(bridge), WAIT_S)
        assert found is not None, f"nothing retained for {bridge}"
        return contract.BridgeStatus.from_json(bytes(found.payload))


@pytest.fixture
def decision_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def gate(site: Site, broker: BrokerFiles, decision_key: Ed25519PrivateKey) -> Iterator[SimulatedGate]:
    clear_status(broker, BRIDGE)
    public = decision_key.public_key()
    sim = start_simulated_gate(
        site, GATE, {contract.key_id(public): public}, _address(broker, BRIDGE), status_every_s=0.2
    )
    try:
        yield sim
    finally:
        sim.stop()
        clear_status(broker, BRIDGE)


def test_status_is_retained_and_heartbeats_carry_the_outbox_length(
    broker: BrokerFiles, gate: SimulatedGate
) -> None:
    with StatusWatcher(broker) as watcher:
        # Nobody acknowledges events here, so the controller's "online" at start-up waits in the outbox.
        index, first = watcher.next_status(BRIDGE, lambda s: s.state == "online" and s.outbox >= 1)
        assert first.bridge == BRIDGE
        assert first.controllers == {GATE: "up"}
        assert first.outbox == len(gate.outbox)
        assert retained_status(broker, BRIDGE).state == "online"

        gate.turnstile.tamper()
        index, grown = watcher.next_status(BRIDGE, lambda s: s.outbox == first.outbox + 1, after=index + 1)
        assert grown.state == "online"
        assert grown.events == first.events + 1

        # The gateway acknowledges every event: the next heartbeats say the outbox is empty.
        with Listener(broker, GATEWAY_USER, []) as gateway:
            for event in gate.outbox.pending(GATE):
                ack = contract.GateEventAck(GATE, event.seq).to_json()
                gateway.client.publish(contract.gate_ack_topic(GATE), ack, qos=1).wait_for_publish(5)
        _, emptied = watcher.next_status(BRIDGE, lambda s: s.outbox == 0, after=index + 1)
        assert emptied.state == "online"
        assert emptied.events == grown.events

        gate.bridge.stop()  # a clean stop says "offline" itself (a clean disconnect discards the will)
        _, last = watcher.next_status(BRIDGE, lambda s: s.state == "offline", after=index + 1)
        assert last.outbox == 0
    assert retained_status(broker, BRIDGE).state == "offline"


def test_a_bridge_cannot_write_another_bridges_status(broker: BrokerFiles) -> None:
    victim = bridge_user("STA-G2")
    topic = contract.bridge_status_topic(victim)
    forged = status(bridge=victim, controllers={"STA-G2": "up"}, outbox=0).to_json()
    genuine = status(bridge=victim, controllers={"STA-G2": "up"}, outbox=5).to_json()
    try:
        with StatusWatcher(broker) as watcher:
            publish_as(broker, BRIDGE, topic, forged)  # another gate's bridge
            publish_as(broker, bus_bridge_user("stadium-north"), topic, forged)  # a bus bridge
            publish_as(broker, "STA-G2-IN", topic, forged)  # the gate's own reader
            publish_as(broker, victim, topic, genuine)  # positive control: the owner's arrives
            assert watcher.wait_for(lambda m: m.payload == genuine, WAIT_S) is not None
            assert [m.payload for m in watcher.messages if m.topic == topic] == [genuine]
    finally:
        clear_status(broker, victim)


@pytest.fixture
def bridge_files(tmp_path: Path, broker: BrokerFiles) -> dict[str, Path]:
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "decision.pem"
    pem.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    password = tmp_path / "bridge.password"
    password.write_text(broker.password(BRIDGE))
    return {"key": pem, "password": password}


def test_last_will_says_offline_when_the_bridge_process_is_killed(
    broker: BrokerFiles, bridge_files: dict[str, Path]
) -> None:
    clear_status(broker, BRIDGE)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firmware_bridge",
            "run",
            "--site",
            str(ROOT / "zones.yaml"),
            "--gate",
            GATE,
            "--broker-port",
            str(broker.port),
            "--password-file",
            str(bridge_files["password"]),
            "--decision-key",
            str(bridge_files["key"]),
            "--simulate",
            "--status-every",
            "0.2",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with StatusWatcher(broker) as watcher:
            # Two heartbeats in a row, both online with the controller up: the process is alive and beating.
            index, _ = watcher.next_status(BRIDGE, lambda s: s.state == "online" and s.controllers == {GATE: "up"})
            index, _ = watcher.next_status(BRIDGE, lambda s: s.state == "online", after=index + 1)
            assert retained_status(broker, BRIDGE).state == "online"
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            process.send_signal(signal.SIGKILL)  # no clean disconnect: only the broker can tell
            process.wait(WAIT_S)
            _, will = watcher.next_status(BRIDGE, lambda s: s.state == "offline", after=index + 1)
            assert will.bridge == BRIDGE
            assert set(will.controllers) == {GATE}
        assert retained_status(broker, BRIDGE).state == "offline"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT_S)
        if process.stderr:
            process.stderr.close()
        clear_status(broker, BRIDGE)


# --- the decision side audits bridges going offline and back --------------------------------------------------


def _monitor(instance, address: BrokerAddress, site: Site) -> ReaderMonitor:  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    return ReaderMonitor(address, f"test-monitor-{secrets.token_hex(3)}", site, sessions, lambda: NOW)


def _bridge_entries(instance) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.kind == "bridge_status").order_by(AuditEntry.seq))
        return [(r.gate, r.reason, r.detail) for r in rows]


NOW = dt.datetime(2026, 7, 24, 18, 0, tzinfo=dt.UTC)
UNUSED = BrokerAddress("127.0.0.1", 1, GATEWAY_USER, "unused")


def test_bridge_changes_are_audited_once_and_going_offline_is_an_alarm(instance, site: Site) -> None:  # type: ignore[no-untyped-def]
    first, second = _monitor(instance, UNUSED, site), _monitor(instance, UNUSED, site)  # two gateway workers
    bus = status()  # bridge-bus.stadium-north: two gates
    one = status(bridge=BRIDGE, controllers={GATE: "up"}, outbox=0)
    assert first.record_bridge(bus)
    assert not second.record_bridge(bus)  # the same message, heard by the other worker
    assert not first.record_bridge(replace(bus, sent_ms=bus.sent_ms + 5000, outbox=0))  # heartbeat
    assert second.record_bridge(one)
    assert first.record_bridge(replace(bus, state="offline"))  # the last will
    assert not second.record_bridge(replace(bus, state="offline"))
    assert not _monitor(instance, UNUSED, site).record_bridge(replace(bus, state="offline"))  # a restarted worker
    assert _bridge_entries(instance) == [
        ("", "bridge_online", "bridge bridge-bus.stadium-north: outbox 3, controllers STA-G1 up, STA-G2 down"),
        (GATE, "bridge_online", "bridge bridge.STA-G1: outbox 0, controllers STA-G1 up"),
        ("", "bridge_offline", "bridge bridge-bus.stadium-north: outbox 3, controllers STA-G1 up, STA-G2 down"),
    ]
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s:
        open_alarms = [(a.kind, a.reason) for a in alarms.unacknowledged(s)]
    assert open_alarms == [("bridge_status", "bridge_offline")]


def test_the_decision_side_audits_a_live_bridge_online_then_offline(  # type: ignore[no-untyped-def]
    instance, site: Site, broker: BrokerFiles, gate: SimulatedGate
) -> None:
    monitor = _monitor(instance, _address(broker, GATEWAY_USER), site)

    def mine() -> list[tuple[str, str, str]]:
        # The suite's broker may still hold other bridges' retained statuses from earlier tests.
        return [e for e in _bridge_entries(instance) if e[2].startswith(f"bridge {BRIDGE}:")]

    monitor.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while [r for _, r, _ in mine()] != ["bridge_online"]:
            assert time.monotonic() < deadline, _bridge_entries(instance)
            time.sleep(0.05)
        gate.bridge.stop()
        while [r for _, r, _ in mine()] != ["bridge_online", "bridge_offline"]:
            assert time.monotonic() < deadline + WAIT_S, _bridge_entries(instance)
            time.sleep(0.05)
    finally:
        monitor.stop()
    assert {g for g, _, _ in mine()} == {GATE}
