"""Faults on the MQTT side, on real parts: the broker restarted with requests in flight, the gateway killed under load.

Each test runs a private Mosquitto (restartable on the same port with the same files), the real decision process
(`python -m gateway decide` in a subprocess), readers' GatewayLinks asking and forwarding answers as the reader
agent does, and the real bus bridge (firmware_bridge.bridge.Bridge with its GateDrivers) in front of simulated
turnstiles that count relay pulses. Afterwards, whatever happened in between:
- every relay pulse belongs to an answer the audit records as an allow for that gate, acted on before it expired;
- every answer a reader acted on is in the audit with the same verdict (no decision lost);
- the audit chain verifies (`python -m gateway audit verify`).
Deadlines are generous bounds for a slow machine, never timing assertions.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from firmware_bridge.bridge import Bridge
from firmware_bridge.gate import CommandOutcome, epoch_ms
from firmware_bridge.outbox import MEMORY, EventOutbox
from gateway import contract
from gateway.broker_setup import (
    GATEWAY_USER,
    BrokerFiles,
    bus_bridge_user,
    free_port,
    start_mosquitto,
    write_broker_files,
)
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.instance import Instance, write_private
from gateway.mqttlink import BrokerAddress
from gateway.site import Site
from readers.gateway_link import GatewayLink
from tests.factories import badged_holder

ROOT = Path(__file__).resolve().parent.parent
BUS = "stadium-north"  # gates STA-G1..G3, one bridge for the three
READERS = ["STA-G1-IN", "STA-G2-IN", "STA-G3-IN", "STA-G1-OUT", "STA-G2-OUT", "STA-G3-OUT"]
ZONES = ["STADIUM-PERIMETER", "STADIUM-CONCOURSE", "STADIUM-BOWL"]
ANSWER_TIMEOUT_S = 1.5  # the reader's default
DEADLINE_S = 30.0  # generous: a loaded 2-core machine, not a timing assertion
pytestmark = pytest.mark.slow


# --- parts -------------------------------------------------------------------------------------------------


class CountingTurnstiles:
    """The controllers of one bus as the bridge sees them (a ControllerLink stand-in): counts relay pulses."""

    def __init__(self, addresses: list[int]) -> None:
        self.addresses = tuple(addresses)
        self.pulses: list[tuple[int, int]] = []  # (controller address, epoch ms)
        self.denials = 0
        self._lock = threading.Lock()

    def grant(self, address: int, pulse_ms: int, text: str) -> None:
        with self._lock:
            self.pulses.append((address, epoch_ms()))

    def deny(self, address: int, text: str) -> None:
        with self._lock:
            self.denials += 1

    def is_secure(self, address: int) -> bool:
        return True

    def add_listener(self, listener: Callable[[int, str], None]) -> None:
        pass  # these turnstiles report nobody walking through: every grant ends as grant_unused

    def remove_listener(self, listener: Callable[[int, str], None]) -> None:
        pass


@dataclass
class Acted:
    """What left a reader or moved a relay, for the checks against the audit."""

    by_readers: list[contract.DecisionAnswer] = field(default_factory=list)
    grants: list[tuple[str, int]] = field(default_factory=list)  # (nonce, epoch ms once the relay was told)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def outcome(self, outcome: CommandOutcome) -> None:
        if outcome.action == "grant" and not outcome.detail:
            with self.lock:
                self.grants.append((outcome.nonce, epoch_ms()))


class Broker:
    """A private Mosquitto that can be killed and started again on the same port with the same files."""

    def __init__(self, folder: Path, site: Site) -> None:
        self.files: BrokerFiles = write_broker_files(folder, site, port=free_port())
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_mosquitto(self.files, log=self.log)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # a crash: no clean disconnect for anyone
        self.proc.wait(10)
        self.proc = None

    def address(self, user: str) -> BrokerAddress:
        return BrokerAddress("127.0.0.1", self.files.port, user, self.files.password(user))


class Gateway:
    """`python -m gateway decide` in a subprocess, startable again after a kill."""

    def __init__(self, instance: Instance, broker: Broker, folder: Path) -> None:
        self.instance = instance
        self.broker = broker
        self.password_file = folder / "gateway.pw"
        write_private(self.password_file, broker.files.password(GATEWAY_USER).encode())
        self.log = folder / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        marker = f"decision worker faults{self.starts} answering on".encode()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "decide",
                    "--instance",
                    str(self.instance.folder),
                    "--broker-port",
                    str(self.broker.files.port),
                    "--password-file",
                    str(self.password_file),
                    "--worker",
                    f"faults{self.starts}",
                ],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "ACCESSGW_LOG_LEVEL": "WARNING"},
            )
        deadline = time.monotonic() + DEADLINE_S
        while marker not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gateway did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


@dataclass
class World:
    instance: Instance
    broker: Broker
    gateway: Gateway
    bridge: Bridge
    turnstiles: CountingTurnstiles
    links: dict[str, GatewayLink]
    tokens: list[str]
    acted: Acted

    def ask_and_act(self, reader: str, token: str) -> contract.DecisionAnswer | None:
        """What the reader agent does for one presentation: ask, and forward a genuine answer to the bridge."""
        link = self.links[reader]
        answer = link.ask(token, ANSWER_TIMEOUT_S)
        if answer is not None:
            with self.acted.lock:
                self.acted.by_readers.append(answer)
            link.forward_to_bridge(answer)
        return answer

    def every_reader_answered(self) -> bool:
        """One fresh request per reader, each answered (retried until the deadline)."""
        deadline = time.monotonic() + DEADLINE_S
        waiting = set(self.links)
        while waiting and time.monotonic() < deadline:
            for reader in sorted(waiting):
                if self.ask_and_act(reader, self.tokens[0]) is not None:
                    waiting.discard(reader)
            time.sleep(0.1)
        return not waiting


@pytest.fixture
def world(instance: Instance, site: Site, tmp_path: Path) -> Iterator[World]:
    broker = Broker(tmp_path / "mqtt", site)
    broker.start()
    gateway = Gateway(instance, broker, tmp_path)
    gateway.start()
    now = dt.datetime.now(dt.UTC)
    tokens = [
        badged_holder(instance, site, ZONES, now, name=(f"Faure{i}", "Ines")).token for i in range(12)
    ]
    pub = instance.keyring.decision_signing.public_key()
    keys = {contract.key_id(pub): pub}
    gates = [g for g in site.gates.values() if g.controller is not None and g.controller.bus == BUS]
    turnstiles = CountingTurnstiles([g.controller.address for g in gates if g.controller is not None])
    acted = Acted()
    bridge = Bridge(
        site,
        [g.code for g in gates],
        turnstiles,  # type: ignore[arg-type]
        keys,
        broker.address(bus_bridge_user(BUS)),
        EventOutbox(MEMORY),
        on_outcome=acted.outcome,
    )
    bridge.start()
    links = {}
    for reader in READERS:
        link = GatewayLink(
            broker.address(reader),
            reader,
            site.readers[reader].gate,
            keys,
            clock_ms=epoch_ms,
            heartbeat_s=1.0,
        )
        link.start()
        links[reader] = link
    w = World(instance, broker, gateway, bridge, turnstiles, links, tokens, acted)
    try:
        yield w
    finally:
        for link in links.values():
            link.stop()
        bridge.stop()
        gateway.stop()
        if broker.proc is not None:
            broker.proc.terminate()
            broker.proc.wait(10)


# --- checks ------------------------------------------------------------------------------------------------


def decisions_by_nonce(instance: Instance) -> dict[str, AuditEntry]:
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.kind == "decision"))
        return {row.ref: row for row in rows if row.ref is not None}


def check_record(w: World) -> dict[str, int]:
    """Everything acted on is in the audit as acted on; returns counts for the test's report."""
    time.sleep(1.0)  # let commands still in the broker reach the bridge before we count
    audit = decisions_by_nonce(w.instance)
    # Every answer a reader acted on was committed to the audit first, with the same verdict.
    for answer in w.acted.by_readers:
        row = audit.get(answer.nonce)
        assert row is not None, f"reader {answer.reader} acted on {answer.nonce}, which the audit does not hold"
        assert (bool(row.allow), row.reason, row.reader) == (answer.allow, answer.reason, answer.reader)
    # Every relay pulse is an allow of the audit, for a reader of that gate, acted on before it expired.
    assert len(w.turnstiles.pulses) == len(w.acted.grants)
    assert len({nonce for nonce, _ in w.acted.grants}) == len(w.acted.grants), "an answer opened a gate twice"
    for nonce, acted_ms in w.acted.grants:
        row = audit.get(nonce)
        assert row is not None and row.allow, f"the relay pulsed for {nonce}, which the audit holds as no allow"
        assert row.gate in w.bridge.drivers
        assert row.expires_ms is not None and acted_ms <= row.expires_ms, f"{nonce} acted on after its expiry"
    assert w.acted.grants, "no grant at all: the test proved nothing"
    verified = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", "--instance", str(w.instance.folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return {"acted by readers": len(w.acted.by_readers), "pulses": len(w.turnstiles.pulses), "audited": len(audit)}


def fire(w: World, count: int) -> tuple[list[threading.Thread], threading.Barrier]:
    """`count` presentations at once, spread over the readers; returns the threads and their start barrier."""
    barrier = threading.Barrier(count + 1)

    def one(i: int) -> None:
        barrier.wait()
        w.ask_and_act(READERS[i % len(READERS)], w.tokens[i % len(w.tokens)])

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    return threads, barrier


# --- the faults --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_broker_restart_with_a_hundred_requests_in_flight(world: World) -> None:
    assert world.every_reader_answered(), "the gate world does not work before the fault"
    before = len(world.acted.by_readers)
    threads, barrier = fire(world, 100)
    barrier.wait()
    deadline = time.monotonic() + DEADLINE_S
    while len(world.acted.by_readers) == before and time.monotonic() < deadline:
        time.sleep(0.001)  # the first answers are back: the rest are on their way
    world.broker.kill()
    answered_before_kill = len(world.acted.by_readers) - before
    time.sleep(0.5)
    world.broker.start()
    restarted = time.monotonic()
    for t in threads:
        t.join(DEADLINE_S)
    # The readers reconnect by themselves (paho's reconnect delay is 1 to 4 s) and say they are online.
    deadline = time.monotonic() + DEADLINE_S
    while not all(link.online for link in world.links.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    back_after = time.monotonic() - restarted
    assert all(link.online for link in world.links.values()), "a reader did not reconnect"
    assert world.bridge.wait_connected(DEADLINE_S)
    # The gateway (its own reconnect and re-subscription) answers every reader again.
    assert world.every_reader_answered(), "the gateway does not answer after the broker's restart"
    counts = check_record(world)
    print(f"{answered_before_kill}/100 answered before the kill; readers online {back_after:.1f} s later; {counts}")


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_gateway_killed_under_load_loses_no_decision(world: World) -> None:
    assert world.every_reader_answered(), "the gate world does not work before the fault"
    stop = threading.Event()
    answered = [0]

    def presenting(reader: str, offset: int) -> None:
        i = offset
        while not stop.is_set():
            if world.ask_and_act(reader, world.tokens[i % len(world.tokens)]) is not None:
                answered[0] += 1
            i += 1

    load = [threading.Thread(target=presenting, args=(r, n), daemon=True) for n, r in enumerate(READERS)]
    for t in load:
        t.start()
    deadline = time.monotonic() + DEADLINE_S
    while answered[0] < 50 and time.monotonic() < deadline:  # under load
        time.sleep(0.01)
    assert answered[0] >= 50
    world.gateway.kill()
    time.sleep(1.0)
    world.gateway.start()
    assert world.every_reader_answered(), "the restarted gateway does not answer"
    stop.set()
    for t in load:
        t.join(DEADLINE_S)
    counts = check_record(world)
    print(f"gateway killed and restarted under load: {counts}")
