"""Controller key files and the bridge's command line, including a real `run --simulate` process."""

from __future__ import annotations

import os
import queue
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_bridge.bridge import epoch_ms
from firmware_bridge.channels import FdChannel
from firmware_bridge.cli import main
from firmware_bridge.keys import KeyFileError, key_path, load_key_file, new_key_file
from firmware_bridge.outbox import EventOutbox
from firmware_bridge.turnstile import SimulatedTurnstile
from gateway import contract
from gateway.broker_setup import BrokerFiles, bridge_user, bus_bridge_user
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client

ROOT = Path(__file__).resolve().parent.parent
GATE = "STA-G1"
READER = "STA-G1-IN"
WAIT_S = 10.0


# --- key files -------------------------------------------------------------------------------------


def test_new_key_file_is_owner_only_and_loads_back(tmp_path: Path) -> None:
    path = new_key_file(tmp_path / "controller.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_key_file(path)
    assert len(key) == 16
    assert load_key_file(path) == key
    assert new_key_file(tmp_path / "other.key") and load_key_file(tmp_path / "other.key") != key


def test_new_key_file_never_overwrites(tmp_path: Path) -> None:
    path = new_key_file(tmp_path / "controller.key")
    before = path.read_text()
    with pytest.raises(KeyFileError, match="already exists"):
        new_key_file(path)
    assert path.read_text() == before


def test_new_key_file_is_owner_only_even_with_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = new_key_file(tmp_path / "controller.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_load_refuses_a_key_others_can_read(tmp_path: Path, mode: int) -> None:
    path = new_key_file(tmp_path / "controller.key")
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key_file(path)


@pytest.mark.parametrize("text", ["00" * 15, "00" * 17, "zz" * 16, ""])
def test_load_refuses_a_key_of_the_wrong_length_or_form(tmp_path: Path, text: str) -> None:
    path = tmp_path / "controller.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, text.encode())
    os.close(fd)
    with pytest.raises(KeyFileError, match="hex digits"):
        load_key_file(path)


def test_load_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        load_key_file(tmp_path / "nope.key")


# --- command line ----------------------------------------------------------------------------------


def test_module_help_lists_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "firmware_bridge", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0
    assert "keygen" in result.stdout and "run" in result.stdout


def test_keygen_writes_a_key_and_refuses_to_overwrite_it(tmp_path: Path) -> None:
    out = tmp_path / "c.key"
    first = CliRunner().invoke(main, ["keygen", "--out", str(out)])
    assert first.exit_code == 0, first.output
    key = load_key_file(out)
    assert key.hex() not in first.output  # the key itself is never printed

    second = CliRunner().invoke(main, ["keygen", "--out", str(out)])
    assert second.exit_code != 0
    assert "already exists" in second.output
    assert load_key_file(out) == key


@pytest.fixture
def run_files(tmp_path: Path, broker: BrokerFiles) -> tuple[Path, Path, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "decision.pem"
    pem.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    password = tmp_path / "bridge.password"
    password.write_text(broker.password(bridge_user(GATE)))
    return pem, password, key


def _run_args(broker: BrokerFiles, pem: Path, password: Path) -> list[str]:
    return [
        "run",
        "--site",
        str(ROOT / "zones.yaml"),
        "--gate",
        GATE,
        "--broker-port",
        str(broker.port),
        "--password-file",
        str(password),
        "--decision-key",
        str(pem),
    ]


def test_run_without_simulate_names_what_is_missing(
    broker: BrokerFiles, run_files: tuple[Path, Path, Ed25519PrivateKey]
) -> None:
    pem, password, _ = run_files
    result = CliRunner().invoke(main, _run_args(broker, pem, password))
    assert result.exit_code != 0
    assert "--port" in result.output and "--key-dir" in result.output
    assert "--simulate" in result.output


def test_run_takes_a_gate_or_a_bus_not_both(
    broker: BrokerFiles, run_files: tuple[Path, Path, Ed25519PrivateKey]
) -> None:
    pem, password, _ = run_files
    both = CliRunner().invoke(main, [*_run_args(broker, pem, password), "--bus", "stadium-north", "--simulate"])
    assert both.exit_code != 0 and "either --gate or --bus" in both.output
    args = _run_args(broker, pem, password)
    args[args.index("--gate") : args.index("--gate") + 2] = ["--bus", "no-such-bus"]
    unknown = CliRunner().invoke(main, [*args, "--simulate"])
    assert unknown.exit_code != 0 and "no-such-bus" in unknown.output


def test_run_on_a_real_bus_needs_every_controller_key(
    tmp_path: Path, broker: BrokerFiles, run_files: tuple[Path, Path, Ed25519PrivateKey]
) -> None:
    pem, password, _ = run_files
    keys = tmp_path / "keys"
    keys.mkdir()
    result = CliRunner().invoke(
        main, [*_run_args(broker, pem, password), "--port", "/dev/null", "--key-dir", str(keys)]
    )
    assert result.exit_code != 0
    assert "STA-G1" in result.output and "commission" in result.output


def test_run_refuses_an_unknown_gate(broker: BrokerFiles, run_files: tuple[Path, Path, Ed25519PrivateKey]) -> None:
    pem, password, _ = run_files
    args = _run_args(broker, pem, password)
    args[args.index(GATE)] = "NO-SUCH-GATE"
    result = CliRunner().invoke(main, [*args, "--simulate"])
    assert result.exit_code != 0
    assert "NO-SUCH-GATE" in result.output


@pytest.fixture
def bridge_process(
    broker: BrokerFiles, run_files: tuple[Path, Path, Ed25519PrivateKey]
) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    pem, password, _ = run_files
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firmware_bridge",
            *_run_args(broker, pem, password),
            "--simulate",
            "--walk-in",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    yield proc, lines
    if proc.poll() is None:
        proc.kill()
        proc.wait(WAIT_S)


def _wait_line(lines: queue.Queue[str], fragment: str) -> str:
    seen: list[str] = []
    deadline = time.monotonic() + WAIT_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        seen.append(line)
        if fragment in line:
            return line
    raise AssertionError(f"no line with {fragment!r} within {WAIT_S} s; saw:\n{''.join(seen)}")


def test_run_simulate_drives_the_turnstile_over_a_pty_and_logs_its_states(
    broker: BrokerFiles,
    run_files: tuple[Path, Path, Ed25519PrivateKey],
    bridge_process: tuple[subprocess.Popen[str], queue.Queue[str]],
) -> None:
    _, _, key = run_files
    proc, lines = bridge_process
    _wait_line(lines, "bridge for STA-G1 listening")

    reader_address = BrokerAddress("127.0.0.1", broker.port, READER, broker.password(READER))
    reader = make_client(reader_address, f"test-{secrets.token_hex(4)}")
    connect_and_wait(reader, reader_address)
    try:
        now = epoch_ms()
        answer = contract.DecisionAnswer(
            reader=READER,
            gate=GATE,
            nonce=secrets.token_hex(16),
            allow=True,
            reason="granted",
            badge="b",
            decided_ms=now,
            expires_ms=now + contract.ANSWER_TTL_MS,
            kid="",
        )
        info = reader.publish(contract.gate_command_topic(GATE), contract.sign_answer(answer, key).to_json(), qos=1)
        info.wait_for_publish(WAIT_S)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
    finally:
        reader.disconnect()
        reader.loop_stop()

    _wait_line(lines, "locked -> released")
    _wait_line(lines, "released -> rotating")  # --walk-in: the simulated person goes through
    _wait_line(lines, "passage (seq")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(WAIT_S) == 0


def _start_process(args: list[str]) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def _stop_process(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(WAIT_S)
        raise


def _send_grant(broker: BrokerFiles, key: Ed25519PrivateKey, reader: str = READER, gate: str = GATE) -> None:
    address = BrokerAddress("127.0.0.1", broker.port, reader, broker.password(reader))
    client = make_client(address, f"test-{secrets.token_hex(4)}")
    connect_and_wait(client, address)
    try:
        now = epoch_ms()
        answer = contract.DecisionAnswer(
            reader=reader,
            gate=gate,
            nonce=secrets.token_hex(16),
            allow=True,
            reason="granted",
            badge="b",
            decided_ms=now,
            expires_ms=now + contract.ANSWER_TTL_MS,
            kid="",
        )
        info = client.publish(contract.gate_command_topic(gate), contract.sign_answer(answer, key).to_json(), qos=1)
        info.wait_for_publish(WAIT_S)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
    finally:
        client.disconnect()
        client.loop_stop()


def test_run_drives_a_real_controller_over_a_serial_port(
    tmp_path: Path, broker: BrokerFiles, run_files: tuple[Path, Path, Ed25519PrivateKey]
) -> None:
    """The production path: pyserial on a port (here a pty), the key from the key folder, the outbox on disk."""
    pem, password, decision_key = run_files
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    key = load_key_file(new_key_file(key_path(keys, GATE)))
    controller_end, device_end = os.openpty()
    for fd in (controller_end, device_end):
        tty.setraw(fd)
    port = os.ttyname(device_end)
    os.close(device_end)
    turnstile = SimulatedTurnstile(FdChannel(controller_end), 1, key)  # STA-G1's controller: address 1
    turnstile.start()
    proc, lines = _start_process([*_run_args(broker, pem, password), "--port", port, "--key-dir", str(keys)])
    try:
        _wait_line(lines, "bridge for STA-G1 listening")
        _wait_line(lines, "controller 1: online")
        _send_grant(broker, decision_key)
        assert turnstile.wait_pulses(1, WAIT_S)
        assert turnstile.pulse_durations_ms == [1500]  # zones.yaml: STA-G1 relay_pulse_ms
        assert _stop_process(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        turnstile.stop()
        os.close(controller_end)
    outbox = keys / "outbox-STA-G1.sqlite"
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o600
    kept = EventOutbox(outbox)  # the gateway never acknowledged: the events are still there for next time
    try:
        assert [e.kind for e in kept.pending()][:1] == ["controller_online"]
    finally:
        kept.close()


def test_run_serves_every_gate_of_a_bus_in_one_process(
    broker: BrokerFiles, run_files: tuple[Path, Path, Ed25519PrivateKey], tmp_path: Path
) -> None:
    pem, _, decision_key = run_files
    password = tmp_path / "bus.password"
    password.write_text(broker.password(bus_bridge_user("stadium-north")))
    args = _run_args(broker, pem, password)
    args[args.index("--gate") : args.index("--gate") + 2] = ["--bus", "stadium-north"]
    proc, lines = _start_process([*args, "--simulate"])
    try:
        _wait_line(lines, "bridge for STA-G1, STA-G2, STA-G3 listening as bridge-bus.stadium-north")
        _send_grant(broker, decision_key, reader="STA-G2-IN", gate="STA-G2")
        _wait_line(lines, "turnstile STA-G2: locked -> released")
        assert _stop_process(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
