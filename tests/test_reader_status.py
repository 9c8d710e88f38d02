"""The reader's retained status and last will: the message schema, and on a real Mosquitto the online status,
the heartbeat's counters, the clean "offline" at the end, and the will when a reader dies without a word."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import contract
from gateway.broker_setup import GATEWAY_USER, BrokerFiles, acl_text
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client
from gateway.site import Site
from readers.gateway_link import GatewayLink
from readers.scenes import empty_frame, write_video

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 10.0  # generous: a slow CI machine, never a timing assertion


def status(**changes: Any) -> contract.ReaderStatus:
    fields: dict[str, Any] = {
        "reader": "STA-G1-IN",
        "state": "online",
        "at_ms": 1_785_094_200_123,
        "frames": 1200,
        "decodes": 14,
        "decisions": 3,
        "offline_queue": 0,
    }
    return contract.ReaderStatus(**{**fields, **changes})


# --- the message ----------------------------------------------------------------------------------------------


def test_status_round_trips_as_compact_json() -> None:
    message = status()
    payload = message.to_json()
    assert json.loads(payload) == {
        "v": 1,
        "reader": "STA-G1-IN",
        "state": "online",
        "at_ms": 1_785_094_200_123,
        "frames": 1200,
        "decodes": 14,
        "decisions": 3,
        "offline_queue": 0,
    }
    assert contract.ReaderStatus.from_json(payload) == message
    assert contract.ReaderStatus.from_json(status(state="offline").to_json()).state == "offline"


def _edited(**changes: Any) -> bytes:
    data = json.loads(status().to_json())
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (_edited(state="busy"), "state"),
        (_edited(state=None), "state"),
        (_edited(frames=-1), "frames"),
        (_edited(decodes=True), "decodes"),
        (_edited(decisions=2.0), "decisions"),
        (_edited(offline_queue="0"), "offline_queue"),
        (_edited(at_ms=-5), "at_ms"),
        (_edited(reader="STA G1"), "reader"),
        (_edited(offline_queue=...), "missing field"),
        (_edited(battery=80), "unknown field"),
        (_edited(v=2), "version"),
        (b"[]", "JSON object"),
    ],
    ids=[
        "unknown-state",
        "null-state",
        "negative-count",
        "bool-count",
        "float-count",
        "string-count",
        "negative-time",
        "bad-reader-code",
        "missing-field",
        "unknown-field",
        "other-version",
        "not-an-object",
    ],
)
def test_status_parsing_is_strict(payload: bytes, problem: str) -> None:
    with pytest.raises(contract.ContractError, match=problem):
        contract.ReaderStatus.from_json(payload)


def test_status_topic_names_the_reader() -> None:
    topic = contract.reader_status_topic("CDG-G2-IN")
    assert topic == "acs/v1/readers/CDG-G2-IN/status"
    assert contract.reader_from_status_topic(topic) == "CDG-G2-IN"
    assert mqtt.topic_matches_sub(contract.READER_STATUS_SUBSCRIPTION, topic)
    for other in ("acs/v1/readers/CDG-G2-IN/request", "acs/v1/gates/CDG-G2/status", "acs/v1/readers/a b/status"):
        with pytest.raises(contract.ContractError):
            contract.reader_from_status_topic(other)


def test_acl_lets_each_reader_write_only_its_own_status(site: Site) -> None:
    acl = acl_text(site).split("\n\n")
    gateway = next(block for block in acl if block.startswith(f"user {GATEWAY_USER}\n"))
    assert "topic read acs/v1/readers/+/status" in gateway.splitlines()
    for code in site.readers:
        block = next(block for block in acl if block.startswith(f"user {code}\n"))
        assert f"topic write acs/v1/readers/{code}/status" in block.splitlines()
        assert sum("/status" in line for line in block.splitlines()) == 1


# --- on a real broker -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    reader: str
    status: contract.ReaderStatus
    retained: bool  # delivered because it was retained when the watcher subscribed


class StatusWatcher:
    """The gateway's account, subscribed to every reader's status."""

    def __init__(self, broker: BrokerFiles, name: str) -> None:
        self.seen: queue.Queue[Seen] = queue.Queue()
        self.history: list[Seen] = []  # everything received, in order
        address = BrokerAddress("127.0.0.1", broker.port, GATEWAY_USER, broker.password(GATEWAY_USER))
        self.subscribed = False
        self.client = make_client(
            address,
            f"status-watcher-{name}-{os.getpid()}",
            [(contract.READER_STATUS_SUBSCRIPTION, 1)],
            on_message=self._on_message,
        )
        self.client.on_subscribe = lambda *_args: setattr(self, "subscribed", True)
        connect_and_wait(self.client, address)
        deadline = time.monotonic() + WAIT_S
        while not self.subscribed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.subscribed

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        reader = contract.reader_from_status_topic(msg.topic)
        seen = Seen(reader, contract.ReaderStatus.from_json(bytes(msg.payload)), bool(msg.retain))
        self.history.append(seen)
        self.seen.put(seen)

    def next_for(self, reader: str, *, retained: bool | None = None, timeout_s: float = WAIT_S) -> Seen:
        """The next status of `reader` (optionally only retained, or only live ones)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                seen = self.seen.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                pytest.fail(f"no status from {reader} within {timeout_s} s")
            if seen.reader == reader and (retained is None or seen.retained == retained):
                return seen

    def until(self, reader: str, wanted: Any, timeout_s: float = WAIT_S) -> list[contract.ReaderStatus]:
        """Live statuses of `reader` up to and including the first for which `wanted(status)` holds."""
        got = []
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self.next_for(reader, retained=False, timeout_s=max(deadline - time.monotonic(), 0.001))
            got.append(seen.status)
            if wanted(seen.status):
                return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def watcher(broker: BrokerFiles, request: pytest.FixtureRequest) -> Iterator[StatusWatcher]:
    watching = StatusWatcher(broker, request.node.name[:20])
    yield watching
    watching.close()


def retained_status(broker: BrokerFiles, reader: str) -> contract.ReaderStatus:
    """What a subscriber arriving now is told about `reader`."""
    late = StatusWatcher(broker, "late")
    try:
        return late.next_for(reader, retained=True).status
    finally:
        late.close()


@dataclass
class FakeCounters:
    frames: int = 0
    decodes: int = 0
    decisions: int = 0
    offline_queue: int = 0


def test_status_is_online_with_growing_counters_then_offline_on_a_clean_stop(
    broker: BrokerFiles, watcher: StatusWatcher
) -> None:
    reader = "CDG-G2-OUT"
    address = BrokerAddress("127.0.0.1", broker.port, reader, broker.password(reader))
    counters = FakeCounters()
    link = GatewayLink(address, reader, "CDG-G2", {}, lambda: int(time.time() * 1000), heartbeat_s=0.1)
    link.start(counters=counters)
    try:
        first = watcher.next_for(reader, retained=False)
        assert (first.status.state, first.status.frames) == ("online", 0)
        counters.frames, counters.decodes, counters.decisions = 250, 7, 2
        beats = watcher.until(reader, lambda s: s.frames == 250)
        assert all(beat.state == "online" for beat in beats)
        assert (beats[-1].decodes, beats[-1].decisions, beats[-1].offline_queue) == (7, 2, 0)
        counters.frames = 400
        later = watcher.until(reader, lambda s: s.frames == 400)[-1]
        assert later.at_ms >= beats[-1].at_ms
        assert retained_status(broker, reader).state == "online"
    finally:
        counters.frames = 420
        link.stop()
    last = watcher.until(reader, lambda s: s.state == "offline")[-1]
    assert (last.frames, last.decodes, last.decisions) == (420, 7, 2)
    assert retained_status(broker, reader) == last


def test_a_reader_cannot_write_another_readers_status(broker: BrokerFiles, watcher: StatusWatcher) -> None:
    intruder, victim = "CDG-G2-IN", "CDG-G1-IN"
    address = BrokerAddress("127.0.0.1", broker.port, intruder, broker.password(intruder))
    client = make_client(address, f"intruder-{os.getpid()}")
    connect_and_wait(client, address)
    try:
        forged = status(reader=victim, state="offline").to_json()
        client.publish(contract.reader_status_topic(victim), forged, qos=1, retain=True).wait_for_publish(WAIT_S)
        own = status(reader=intruder, frames=77).to_json()
        client.publish(contract.reader_status_topic(intruder), own, qos=1).wait_for_publish(WAIT_S)
        # The broker keeps one client's messages in order: once its own status arrived, the forged one never will.
        assert watcher.next_for(intruder, retained=False).status.frames == 77
        assert [seen for seen in watcher.history if seen.reader == victim and not seen.retained] == []
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def reader_files(tmp_path: Path, broker: BrokerFiles) -> dict[str, Path]:
    """A long, paced camera video of an empty scene, a decision key and the reader's password file."""
    video = tmp_path / "camera.avi"
    rng = np.random.default_rng(5)
    write_video([empty_frame((320, 240), rng) for _ in range(5)] * 60, video, fps=10)
    key = tmp_path / "decision.pub.pem"
    key.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    password = tmp_path / "reader.pw"
    password.write_text(broker.password("CDG-G1-OUT"))
    password.chmod(0o600)
    return {"video": video, "key": key, "password": password}


def test_last_will_says_offline_when_the_reader_process_is_killed(
    broker: BrokerFiles, watcher: StatusWatcher, reader_files: dict[str, Path]
) -> None:
    reader = "CDG-G1-OUT"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "readers",
            "run",
            "--site",
            str(ROOT / "zones.yaml"),
            "--reader",
            reader,
            "--source",
            str(reader_files["video"]),
            "--fps",
            "20",
            "--broker-port",
            str(broker.port),
            "--password-file",
            str(reader_files["password"]),
            "--decision-key",
            str(reader_files["key"]),
            "--heartbeat",
            "0.2",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        beats = watcher.until(reader, lambda s: s.frames >= 10, timeout_s=60)
        assert all(beat.state == "online" for beat in beats)
        frames = [beat.frames for beat in beats]
        assert frames == sorted(frames)
        assert retained_status(broker, reader).state == "online"
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGKILL)  # no clean disconnect: only the broker can tell
        process.wait(WAIT_S)
        will = watcher.until(reader, lambda s: s.state == "offline")[-1]
        assert will.reader == reader
        assert retained_status(broker, reader).state == "offline"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT_S)
        if process.stderr:
            process.stderr.close()
