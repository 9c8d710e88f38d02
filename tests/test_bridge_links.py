"""Fail-secure over MQTT: the bridge's and the gateway's links to the broker dropped and restored, the gateway
away, the bridge restarted. The relay never moves for any of it, and every controller event reaches the gateway's
audit (the real GateEventService and GateEventWorker on SQLite) in order and once.

Each link passes through a TCP proxy that the test cuts (closing every connection and refusing new ones) and
mends. Waits are generous and return as soon as their condition holds; measured delays are printed, not asserted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import random
import secrets
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from firmware_bridge import display
from firmware_bridge.gate import epoch_ms
from firmware_bridge.outbox import EventOutbox
from firmware_bridge.sim import SimulatedGate, start_simulated_bus, start_simulated_gate
from gateway import contract
from gateway.broker_setup import GATEWAY_USER, BrokerFiles, bridge_user, bus_bridge_user
from gateway.db.engine import make_engine, session_factory, upgrade
from gateway.db.models import AuditEntry
from gateway.gate_events import GateEventService, GateEventWorker, Recorded
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client
from gateway.site import Site

GATE, READER = "STA-G1", "STA-G1-IN"
WAIT_S = 10.0  # generous: every wait returns as soon as its condition holds
FAST_RECONNECT = (0.05, 0.2)  # seconds; production waits 1 s to 4 s between attempts
_barriers = iter(range(1, 1_000_000))


# --- a link that can be cut --------------------------------------------------------------------------


class Proxy:
    """A TCP relay to the broker; cut() closes every connection through it and refuses new ones until mend()."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._close(s)

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(s)
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            self._close(s)

    def mend(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closing = True
        self.cut()
        self._server.close()


def _address(port: int, broker: BrokerFiles, user: str) -> BrokerAddress:
    return BrokerAddress("127.0.0.1", port, user, broker.password(user))


# --- the gateway side: real service and worker, timed --------------------------------------------------


@dataclass
class TimedService(GateEventService):
    """The real service, noting when each event's transaction had committed (monotonic s), by ref."""

    committed: dict[str, float] = dataclasses.field(default_factory=dict)
    changed: threading.Condition = dataclasses.field(default_factory=threading.Condition)

    def record(self, event: contract.GateEvent) -> Recorded:
        result = super().record(event)
        with self.changed:
            self.committed.setdefault(f"{event.gate}:{event.seq}", time.monotonic())
            self.changed.notify_all()
        return result


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    return session_factory(make_engine(url))


@pytest.fixture
def service(sessions: sessionmaker[Session]) -> TimedService:
    return TimedService(sessions=sessions, clock=lambda: dt.datetime.now(dt.UTC))


def _start_worker(service: GateEventService, address: BrokerAddress) -> GateEventWorker:
    worker = GateEventWorker(service, address, client_id=f"gateway-events-{secrets.token_hex(3)}")
    worker.client.reconnect_delay_set(*FAST_RECONNECT)  # type: ignore[arg-type]  # paho accepts floats
    worker.start()
    return worker


@pytest.fixture
def worker(service: TimedService, broker: BrokerFiles) -> Iterator[GateEventWorker]:
    w = _start_worker(service, _address(broker.port, broker, GATEWAY_USER))
    yield w
    w.stop()


def gate_rows(sessions: sessionmaker[Session], gate: str = GATE) -> list[AuditEntry]:
    """The gate's event entries, in audit order."""
    with sessions() as s:
        query = select(AuditEntry).where(AuditEntry.kind == "gate_event", AuditEntry.gate == gate)
        return list(s.scalars(query.order_by(AuditEntry.seq)))


def wait_for(condition: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.02)


def assert_in_order_once(rows: list[AuditEntry]) -> None:
    seqs = [json.loads(r.detail)["seq"] for r in rows]
    assert seqs == sorted(seqs), "events reached the audit out of their order"
    assert len(set(seqs)) == len(seqs)
    assert [r.ref for r in rows] == [f"{r.gate}:{s}" for r, s in zip(rows, seqs, strict=True)]


# --- the reader side -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def decision_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _keys(key: Ed25519PrivateKey) -> dict[str, Any]:
    return {contract.key_id(key.public_key()): key.public_key()}


def _answer(key: Ed25519PrivateKey, reader: str = READER, gate: str = GATE, **fields: Any) -> contract.DecisionAnswer:
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


class Reader:
    def __init__(self, broker: BrokerFiles, code: str = READER) -> None:
        self.address = _address(broker.port, broker, code)
        self.client = make_client(self.address, f"test-{code}-{secrets.token_hex(3)}")
        connect_and_wait(self.client, self.address)

    def send(self, gate: str, answer: contract.DecisionAnswer) -> None:
        info = self.client.publish(contract.gate_command_topic(gate), answer.to_json(), qos=1)
        info.wait_for_publish(WAIT_S)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def reader(broker: BrokerFiles) -> Iterator[Reader]:
    r = Reader(broker)
    yield r
    r.close()


def barrier(reader: Reader, key: Ed25519PrivateKey, sim: SimulatedGate, gate: str = GATE, code: str = READER) -> None:
    """A deny through the whole path; once the display shows it, every earlier command has arrived."""
    reason = f"barrier_{next(_barriers)}"
    reader.send(gate, _answer(key, reader=code, gate=gate, allow=False, reason=reason))
    text = display.deny_text(reason)
    assert sim.turnstiles[gate].wait_until(lambda t: t.text == text, WAIT_S), "barrier not shown"


# --- tests ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_hundred_drops_of_the_bridge_and_gateway_links_move_no_relay_and_lose_no_event(
    site: Site,
    broker: BrokerFiles,
    decision_key: Ed25519PrivateKey,
    service: TimedService,
    sessions: sessionmaker[Session],
    reader: Reader,
) -> None:
    bridge_proxy, gateway_proxy = Proxy(broker.port), Proxy(broker.port)
    sim = start_simulated_gate(
        site,
        GATE,
        _keys(decision_key),
        _address(bridge_proxy.port, broker, bridge_user(GATE)),
        reconnect_delay_s=FAST_RECONNECT,
        ack_timeout_s=0.5,
    )
    worker = _start_worker(service, _address(gateway_proxy.port, broker, GATEWAY_USER))
    try:
        turnstile = sim.turnstile
        grant = _answer(decision_key)
        reader.send(GATE, grant)
        assert turnstile.wait_state(turnstile.state.RELEASED, WAIT_S)
        assert turnstile.pass_person()
        expected = ["controller_online", "passage"]

        rng = random.Random(6)
        for cycle in range(100):
            proxy = bridge_proxy if cycle % 2 == 0 else gateway_proxy
            before = sim.bridge.connections
            proxy.cut()
            if cycle % 5 == 0:  # the controller reports while a link is down
                turnstile.tamper()
                turnstile.reset()
                expected.append("tamper")
            time.sleep(rng.uniform(0.0, 0.05))
            proxy.mend()
            if proxy is bridge_proxy:
                wait_for(lambda b=before: sim.bridge.connections > b, what="the bridge reconnecting")  # type: ignore[misc]

        wait_for(lambda: len(sim.outbox) == 0, timeout=30, what="the outbox emptying")
        barrier(reader, decision_key, sim)
        assert turnstile.relay_pulses == 1  # the genuine grant; no drop or return moved the relay
        rows = gate_rows(sessions)
        assert [r.reason for r in rows] == expected
        assert_in_order_once(rows)
        assert json.loads(rows[1].detail)["nonce"] == grant.nonce
        print(f"\n100 link drops: bridge connected {sim.bridge.connections} times; {len(rows)} events audited once")
    finally:
        worker.stop()
        sim.stop()
        bridge_proxy.close()
        gateway_proxy.close()


def test_events_wait_in_the_outbox_while_the_gateway_is_away_and_survive_a_bridge_restart(
    site: Site,
    broker: BrokerFiles,
    decision_key: Ed25519PrivateKey,
    service: TimedService,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    outbox = tmp_path / "outbox.sqlite"
    address = _address(broker.port, broker, bridge_user(GATE))
    first = start_simulated_gate(site, GATE, _keys(decision_key), address, outbox=outbox, ack_timeout_s=0.5)
    try:
        first.turnstile.force()
        first.turnstile.tamper()
        wait_for(lambda: len(first.outbox) == 3, what="three events in the outbox")
    finally:
        first.stop()  # the gateway never heard of them
    kept = EventOutbox(outbox)
    try:
        before = [(e.kind, e.seq) for e in kept.pending()]
    finally:
        kept.close()
    assert [k for k, _ in before] == ["controller_online", "door_forced", "tamper"]

    second = start_simulated_gate(site, GATE, _keys(decision_key), address, outbox=outbox, ack_timeout_s=0.5)
    worker = _start_worker(service, _address(broker.port, broker, GATEWAY_USER))
    try:
        wait_for(lambda: len(second.outbox) == 0, what="the outbox emptying")
        rows = gate_rows(sessions)
        assert [r.reason for r in rows] == ["controller_online", "door_forced", "tamper", "controller_online"]
        assert [json.loads(r.detail)["seq"] for r in rows[:3]] == [s for _, s in before]
        assert_in_order_once(rows)  # the restarted bridge kept counting upwards
        assert second.turnstile.relay_pulses == 0
    finally:
        worker.stop()
        second.stop()


def test_forced_held_open_and_tamper_reach_the_audit_and_their_delays_are_measured(
    site: Site,
    broker: BrokerFiles,
    decision_key: Ed25519PrivateKey,
    service: TimedService,
    sessions: sessionmaker[Session],
    worker: GateEventWorker,
    reader: Reader,
) -> None:
    held_open_s = 0.3
    sim = start_simulated_gate(
        site, GATE, _keys(decision_key), _address(broker.port, broker, bridge_user(GATE)), held_open_s=held_open_s
    )
    delays: dict[str, list[float]] = {"door_forced": [], "door_held_open": [], "tamper": []}
    try:
        turnstile = sim.turnstile
        wait_for(lambda: len(gate_rows(sessions)) == 1, what="controller_online audited")
        for _ in range(10):
            for kind in delays:
                known = {r.ref for r in gate_rows(sessions)}
                if kind == "door_held_open":
                    reader.send(GATE, _answer(decision_key))
                    assert turnstile.wait_state(turnstile.state.RELEASED, WAIT_S)
                    assert turnstile.hold_open()
                    since = time.monotonic() + held_open_s  # the alarm is due once the door has been open this long
                else:
                    since = time.monotonic()
                    turnstile.force() if kind == "door_forced" else turnstile.tamper()

                def audited(kind: str = kind, known: set[str] = known) -> list[AuditEntry]:
                    return [r for r in gate_rows(sessions) if r.reason == kind and r.ref not in known]

                wait_for(lambda a=audited: bool(a()), what=f"{kind} in the audit")  # type: ignore[misc]
                row = audited()[0]
                with service.changed:  # the row is visible a moment before record() returns and notes the time
                    assert service.changed.wait_for(lambda ref=row.ref: ref in service.committed, WAIT_S)
                    delays[kind].append((service.committed[row.ref] - since) * 1000)
                assert row.gate == GATE and row.kind == "gate_event"
                turnstile.reset()
        barrier(reader, decision_key, sim)
        assert turnstile.relay_pulses == 10  # the ten grants used to hold the door open; no alarm moved it
    finally:
        sim.stop()
    lines = [
        f"{kind:15s} n={len(d)} p50={statistics.median(d):6.1f} ms  max={max(d):6.1f} ms" for kind, d in delays.items()
    ]
    print("\nturnstile action -> committed audit entry:\n" + "\n".join(lines))


def test_the_time_from_an_answer_on_the_command_topic_to_the_relay_command_is_measured(
    site: Site, broker: BrokerFiles, decision_key: Ed25519PrivateKey, reader: Reader
) -> None:
    sim = start_simulated_gate(site, GATE, _keys(decision_key), _address(broker.port, broker, bridge_user(GATE)))
    delays: list[float] = []
    try:
        for n in range(1, 31):
            answer = _answer(decision_key)
            sent = time.monotonic()
            reader.send(GATE, answer)  # what a reader does once it holds a checked allow
            assert sim.turnstile.wait_pulses(n, WAIT_S)
            delays.append((sim.turnstile.pulse_times[-1] - sent) * 1000)
            time.sleep(0.2)  # a person every 200 ms at most: the bus is not kept saturated
    finally:
        sim.stop()
    q = statistics.quantiles(delays, n=20)
    print(f"\nallow on the command topic -> relay command at the controller: n={len(delays)} "
          f"p50={statistics.median(delays):.1f} ms p95={q[18]:.1f} ms max={max(delays):.1f} ms")  # fmt: skip


def test_a_grant_with_no_passage_becomes_grant_unused_with_its_nonce(
    site: Site,
    broker: BrokerFiles,
    decision_key: Ed25519PrivateKey,
    sessions: sessionmaker[Session],
    worker: GateEventWorker,
    reader: Reader,
) -> None:
    quick = replace(site.gates[GATE], passage_timeout_s=1)
    quick_site = replace(site, gates={**site.gates, GATE: quick})
    sim = start_simulated_gate(quick_site, GATE, _keys(decision_key), _address(broker.port, broker, bridge_user(GATE)))
    try:
        used, unused = _answer(decision_key), _answer(decision_key)
        reader.send(GATE, used)
        assert sim.turnstile.wait_state(sim.turnstile.state.RELEASED, WAIT_S)
        assert sim.turnstile.pass_person()
        assert sim.turnstile.wait_state(sim.turnstile.state.LOCKED, WAIT_S)
        reader.send(GATE, unused)  # nobody walks through this one
        wait_for(lambda: any(r.reason == "grant_unused" for r in gate_rows(sessions)), what="grant_unused")
        rows = gate_rows(sessions)
        by_kind = {r.reason: json.loads(r.detail)["nonce"] for r in rows if r.reason in ("passage", "grant_unused")}
        assert by_kind == {"passage": used.nonce, "grant_unused": unused.nonce}
        assert sim.turnstile.relay_pulses == 2
    finally:
        sim.stop()


def test_one_bridge_serves_every_gate_of_a_bus(
    site: Site,
    broker: BrokerFiles,
    decision_key: Ed25519PrivateKey,
    sessions: sessionmaker[Session],
    worker: GateEventWorker,
) -> None:
    bus = site.gates["STA-G2"].controller.bus  # type: ignore[union-attr]
    gates = [g.code for g in site.gates.values() if g.controller is not None and g.controller.bus == bus]
    assert len(gates) >= 2
    sim = start_simulated_bus(site, bus, _keys(decision_key), _address(broker.port, broker, bus_bridge_user(bus)))
    g2_reader = Reader(broker, "STA-G2-IN")
    try:
        g2_reader.send("STA-G2", _answer(decision_key, reader="STA-G2-IN", gate="STA-G2"))
        assert sim.turnstiles["STA-G2"].wait_pulses(1, WAIT_S)
        sim.turnstiles[gates[-1]].tamper()
        wait_for(lambda: any(r.reason == "tamper" for r in gate_rows(sessions, gates[-1])), what="tamper audited")
        barrier(g2_reader, decision_key, sim, "STA-G2", "STA-G2-IN")
        assert {g: t.relay_pulses for g, t in sim.turnstiles.items()} == {g: int(g == "STA-G2") for g in gates}
        for gate in gates:
            assert [r.reason for r in gate_rows(sessions, gate)][:1] == ["controller_online"]
        assert all(r.reason != "tamper" for g in gates[:-1] for r in gate_rows(sessions, g))
    finally:
        g2_reader.close()
        sim.stop()
