"""Prometheus metrics scraped over HTTP after real actions: a badge scanned at a gate, in-process but on real parts
(a private Mosquitto, the decision process with its database, a reader agent decoding rendered camera frames,
a bridge driving a simulated OSDP turnstile), then the three /metrics endpoints read and parsed."""

from __future__ import annotations

import datetime as dt
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from firmware_bridge.metrics import BridgeMetrics
from firmware_bridge.sim import SimulatedGate, start_simulated_gate
from gateway import badges, contract
from gateway.broker_setup import GATEWAY_USER, BrokerFiles, bridge_user
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import Badge
from gateway.decision_process import DecisionProcess
from gateway.heartbeat import read_beats
from gateway.metrics_server import MetricsServer, serve
from gateway.mqttlink import BrokerAddress
from readers.agent import ReaderAgent
from readers.decoding import Decoder, to_gray
from readers.gateway_link import GatewayLink
from readers.metrics import ReaderMetrics
from readers.scenes import render_badge_frame
from tests.mqtt_helpers import Listener

GATE, READER = "STA-G1", "STA-G1-IN"


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample at http://127.0.0.1:port/metrics, keyed by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        body = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def issue(instance, site, revoked: bool = False) -> Badge:  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    now = dt.datetime.now(dt.UTC)
    with sessions() as s, s.begin():
        org = badges.get_or_create_organisation(s, "SEC-9", "Private security nine", "private_security", "FR")
        holder = badges.register_holder(s, site, org, "Martin", "Inès", "private_guard", "FR", now)
        badge = badges.issue_badge(
            s, site, instance.keyring, instance.settings.issuer, holder, ["STADIUM-PERIMETER"],
            now - dt.timedelta(minutes=5), now + dt.timedelta(days=1), now,
        )
        if revoked:
            badges.revoke_badge(s, badge.id, "lost", now)
    return badge


@dataclass
class Gate:
    process: DecisionProcess
    reader_metrics: ReaderMetrics
    reader_server: MetricsServer
    agent: ReaderAgent
    link: GatewayLink
    sim: SimulatedGate
    bridge_metrics: BridgeMetrics
    bridge_server: MetricsServer

    @property
    def decision_port(self) -> int:
        assert self.process.metrics_server is not None
        return self.process.metrics_server.port


@pytest.fixture
def gate(instance, site, broker: BrokerFiles) -> Iterator[Gate]:  # type: ignore[no-untyped-def]
    process = DecisionProcess(
        instance,
        BrokerAddress("127.0.0.1", broker.port, GATEWAY_USER, broker.password(GATEWAY_USER)),
        "m1",
        metrics_address=("127.0.0.1", 0),
    )
    process.start()
    pub = instance.keyring.decision_signing.public_key()
    keys = {contract.key_id(pub): pub}
    bridge_metrics = BridgeMetrics()
    sim = start_simulated_gate(
        site,
        GATE,
        keys,
        BrokerAddress("127.0.0.1", broker.port, bridge_user(GATE), broker.password(bridge_user(GATE))),
        on_outcome=bridge_metrics.on_outcome,
    )
    bridge_metrics.watch(sim.bridge, sim.outbox, sim.link, {GATE: site.gates[GATE].controller.address})
    bridge_server = serve(bridge_metrics.registry, "127.0.0.1", 0)
    reader_address = BrokerAddress("127.0.0.1", broker.port, READER, broker.password(READER))
    link = GatewayLink(reader_address, READER, GATE, keys, lambda: int(time.time() * 1000))
    reader_metrics = ReaderMetrics(READER, GATE)
    agent = ReaderAgent(READER, Decoder(), link, to_gray, clock_s=time.monotonic, on_outcome=reader_metrics.on_outcome)
    reader_metrics.watch(agent, link)
    reader_server = serve(reader_metrics.registry, "127.0.0.1", 0)
    link.start(counters=agent)
    yield Gate(process, reader_metrics, reader_server, agent, link, sim, bridge_metrics, bridge_server)
    link.stop()
    reader_server.stop()
    bridge_server.stop()
    sim.stop()
    process.stop()


def show(gate: Gate, badge: Badge, frames: int, seed: int) -> None:
    frame = render_badge_frame(badge.token, (1280, 720), rng=np.random.default_rng(seed), perspective=0.1)
    gate.agent.run([frame] * frames)


def test_a_granted_scan_is_counted_by_the_reader_the_decision_process_and_the_bridge(  # type: ignore[no-untyped-def]
    gate: Gate, instance, site
) -> None:
    before = scrape(gate.decision_port)
    assert value(before, "accessgw_decisions_total", result="allow", reason="granted") is None
    assert value(before, "accessgw_decision_duration_seconds_count") == 0

    show(gate, issue(instance, site), frames=3, seed=1)
    assert gate.sim.turnstile.wait_pulses(1, timeout=5)

    decided = scrape(gate.decision_port)
    assert value(decided, "accessgw_decisions_total", result="allow", reason="granted") == 1
    assert value(decided, "accessgw_decision_duration_seconds_count") == 1
    assert value(decided, "accessgw_decision_batch_size_requests_sum") == 1
    assert value(decided, "accessgw_broker_connected", link="decisions") == 1
    assert value(decided, "accessgw_decision_heartbeat_timestamp_seconds") > 0  # type: ignore[operator]

    reader = scrape(gate.reader_server.port)
    assert value(reader, "accessgw_reader_frames_total", reader=READER) == 3
    assert value(reader, "accessgw_reader_decodes_total", reader=READER) == gate.agent.decodes >= 3
    assert value(reader, "accessgw_reader_decisions_total", reader=READER, result="allow", reason="granted") == 1
    assert value(reader, "accessgw_reader_gateway_link_up", reader=READER) == 1
    assert value(reader, "accessgw_reader_offline_queue", reader=READER) == 0

    bridge = scrape(gate.bridge_server.port)
    assert value(bridge, "accessgw_bridge_commands_total", action="grant") == 1
    assert value(bridge, "accessgw_bridge_commands_total", action="deny") == 0
    assert value(bridge, "accessgw_bridge_controller_link_up", gate=GATE) == 1
    assert value(bridge, "accessgw_bridge_broker_connected") == 1
    assert value(bridge, "accessgw_bridge_outbox_events") is not None


def test_a_denial_is_counted_under_its_reason(gate: Gate, instance, site) -> None:  # type: ignore[no-untyped-def]
    show(gate, issue(instance, site, revoked=True), frames=2, seed=2)
    assert gate.sim.turnstile.wait_until(lambda t: "red" in t.led_history, timeout=5)
    decided = scrape(gate.decision_port)
    assert value(decided, "accessgw_decisions_total", result="deny", reason="revoked") == 1
    assert value(decided, "accessgw_decisions_total", result="allow", reason="granted") is None
    reader = scrape(gate.reader_server.port)
    assert value(reader, "accessgw_reader_decisions_total", reader=READER, result="deny", reason="revoked") == 1
    assert value(scrape(gate.bridge_server.port), "accessgw_bridge_commands_total", action="deny") == 1


def test_alarms_are_counted_once_when_audited(gate: Gate, broker: BrokerFiles) -> None:
    assert value(scrape(gate.decision_port), "accessgw_alarms_total", kind="door_forced") == 0
    user = bridge_user(GATE)
    forced = contract.GateEvent(gate=GATE, kind="door_forced", seq=900_001, at_ms=int(time.time() * 1000))
    with Listener(broker, user, [contract.gate_ack_topic(GATE)]) as acks:
        for _ in range(2):  # sent again, as a bridge does without an acknowledgement: audited and counted once
            acks.client.publish(contract.gate_event_topic(GATE), forced.to_json(), qos=1)
            assert acks.wait_for(lambda m: contract.GateEventAck.from_json(m.payload).seq == forced.seq)
        deadline = time.monotonic() + 5
        while len([m for m in acks.messages if contract.GateEventAck.from_json(m.payload).seq == forced.seq]) < 2:
            assert time.monotonic() < deadline, "the repeat was not acknowledged"
            time.sleep(0.05)
    samples = scrape(gate.decision_port)
    assert value(samples, "accessgw_alarms_total", kind="door_forced") == 1
    assert value(samples, "accessgw_gate_events_total", kind="door_forced") == 1
    assert value(samples, "accessgw_alarms_total", kind="tamper") == 0


def test_the_decision_process_records_its_heartbeat_and_its_stop(gate: Gate, instance) -> None:  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s:
        [beat] = read_beats(s)
    assert (beat.worker, beat.state, beat.broker) == ("m1", "running", True)
    gate.process.heartbeat.stop()
    with sessions() as s:
        [beat] = read_beats(s)
    assert (beat.worker, beat.state) == ("m1", "stopped")


def test_metric_names_follow_prometheus_conventions(gate: Gate) -> None:
    """snake_case with our prefix; counters end in _total; no label carries a badge, holder or nonce."""
    for port in (gate.decision_port, gate.reader_server.port, gate.bridge_server.port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            families = list(text_string_to_metric_families(response.read().decode()))
        ours = [f for f in families if f.name.startswith("accessgw_")]
        assert ours
        for family in ours:
            assert family.name == family.name.lower() and " " not in family.name
            if family.type == "counter":
                assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
            for sample in family.samples:
                assert not {"badge", "holder", "nonce"} & set(sample.labels), family.name
