"""The generated Mosquitto ACL on a real broker: each reader hears only its own answers and speaks only for itself.

Every denial test has a positive control (the same message from the right account does arrive), so a test
cannot pass because nothing was delivered at all.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client
from tests.mqtt_helpers import Listener

ROOT = Path(__file__).resolve().parent.parent


def publish_as(broker, user: str, topic: str, payload: bytes, password: str | None = None) -> None:  # type: ignore[no-untyped-def]
    address = BrokerAddress("127.0.0.1", broker.port, user, password or broker.password(user))
    client = make_client(address, f"pub-{user}-{time.monotonic_ns()}")
    connect_and_wait(client, address)
    client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_a_reader_cannot_read_another_readers_answers(broker) -> None:  # type: ignore[no-untyped-def]
    topic = "acs/v1/readers/STA-G2-IN/answer"
    with Listener(broker, "STA-G1-IN", [topic]) as eavesdropper, Listener(broker, "STA-G2-IN", [topic]) as owner:
        publish_as(broker, "gateway", topic, b"for STA-G2-IN only")
        assert owner.wait_for(lambda m: m.payload == b"for STA-G2-IN only") is not None
        assert eavesdropper.wait_for(lambda m: True, timeout=1) is None


def test_a_reader_cannot_publish_an_answer(broker) -> None:  # type: ignore[no-untyped-def]
    topic = "acs/v1/readers/STA-G1-IN/answer"
    with Listener(broker, "STA-G1-IN", [topic]) as victim:
        publish_as(broker, "STA-G2-IN", topic, b"forged by another reader")
        publish_as(broker, "STA-G1-IN", topic, b"forged by the reader itself")
        publish_as(broker, "gateway", topic, b"genuine")
        assert victim.wait_for(lambda m: m.payload == b"genuine") is not None
        assert [m.payload for m in victim.messages] == [b"genuine"]


def test_a_reader_cannot_ask_in_another_readers_name(broker) -> None:  # type: ignore[no-untyped-def]
    with Listener(broker, "gateway", ["acs/v1/readers/+/request"]) as gateway:
        publish_as(broker, "STA-G1-IN", "acs/v1/readers/STA-G2-IN/request", b"spoofed")
        publish_as(broker, "STA-G2-IN", "acs/v1/readers/STA-G2-IN/request", b"own")
        assert gateway.wait_for(lambda m: m.payload == b"own") is not None
        assert [m.payload for m in gateway.messages] == [b"own"]


def test_a_reader_cannot_command_another_gate(broker) -> None:  # type: ignore[no-untyped-def]
    with Listener(broker, "bridge.STA-G2", ["acs/v1/gates/STA-G2/command"]) as bridge:
        publish_as(broker, "STA-G1-IN", "acs/v1/gates/STA-G2/command", b"not your gate")
        publish_as(broker, "STA-G2-IN", "acs/v1/gates/STA-G2/command", b"your gate")
        assert bridge.wait_for(lambda m: m.payload == b"your gate") is not None
        assert [m.payload for m in bridge.messages] == [b"your gate"]


@pytest.mark.parametrize(("user", "password"), [("", ""), ("STA-G1-IN", "wrong"), ("nobody", "nothing")])
def test_anonymous_and_unknown_clients_are_refused(broker, user: str, password: str) -> None:  # type: ignore[no-untyped-def]
    address = BrokerAddress("127.0.0.1", broker.port, user, password)
    client = make_client(address, f"intruder-{time.monotonic_ns()}")
    if not user:
        client.username_pw_set(None, None)
    with pytest.raises(ConnectionError, match="refused"):
        connect_and_wait(client, address, timeout_s=5)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_broker_config_command_writes_owner_only_files(instance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "mqtt"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "broker-config",
            "--instance",
            str(instance.folder),
            "--out",
            str(out),
            "--port",
            "18883",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    for name in ("mosquitto.conf", "passwd", "acl", "credentials.json"):
        mode = stat.S_IMODE(os.stat(out / name).st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    conf = (out / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "set_tcp_nodelay true" in conf
    acl = (out / "acl").read_text()
    assert (
        "user STA-G1-IN\ntopic write acs/v1/readers/STA-G1-IN/request\ntopic read acs/v1/readers/STA-G1-IN/answer"
        in acl
    )
