"""Commissioning: the one place the default install key may be used, for a few logged seconds, to install the
controller's own key with KEYSET. libosdp on both ends; the command line runs over a pty through pyserial."""

from __future__ import annotations

import json
import os
import secrets
import stat
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import osdp
import pytest
from click.testing import CliRunner

from firmware_bridge.channels import FdChannel, channel_pair
from firmware_bridge.cli import main
from firmware_bridge.commission import Outcome, commission, key_fingerprint
from firmware_bridge.controller import ControllerLink
from firmware_bridge.keys import SCBK_D, key_path, load_key_file
from firmware_bridge.turnstile import SimulatedTurnstile
from tests.test_bridge_faults import PlaintextController

ROOT = Path(__file__).resolve().parent.parent
ADDRESS = 1  # STA-G1's controller in zones.yaml
WINDOW_S = 10.0
WAIT_S = 5.0


def _commission_in_background(channel: osdp.Channel, key: bytes, window_s: float) -> tuple[threading.Thread, list]:  # type: ignore[type-arg]
    result: list[Outcome] = []
    thread = threading.Thread(target=lambda: result.append(commission(channel, ADDRESS, key, window_s)))
    thread.start()
    return thread, result


def test_a_controller_in_install_mode_gets_its_own_key_and_then_works_on_it_alone() -> None:
    cp_channel, pd_channel = channel_pair()
    turnstile = SimulatedTurnstile(pd_channel, ADDRESS, None, install_mode=True)
    key = secrets.token_bytes(16)
    turnstile.start()
    try:
        outcome = commission(cp_channel, ADDRESS, key, WINDOW_S)
        assert outcome.ok, outcome.detail
        assert "KEYSET" in outcome.detail
        assert turnstile.scbk == key  # stored by the controller
        assert turnstile.relay_pulses == 0 and turnstile.led_history == []  # nothing but the key was sent

        link = ControllerLink(cp_channel, {ADDRESS: key})  # the bridge: enforce-secure, its own key only
        link.start()
        try:
            assert link.wait_secure(ADDRESS, 10.0)
            link.grant(ADDRESS, 500, "GO")
            assert turnstile.wait_pulses(1, WAIT_S)
        finally:
            link.stop()
    finally:
        turnstile.stop()


def test_commissioning_again_with_the_same_key_proves_it_without_the_default_key() -> None:
    cp_channel, pd_channel = channel_pair()
    key = secrets.token_bytes(16)
    turnstile = SimulatedTurnstile(pd_channel, ADDRESS, key)
    turnstile.start()
    try:
        outcome = commission(cp_channel, ADDRESS, key, WINDOW_S)
        assert outcome.ok and "already had this key" in outcome.detail
    finally:
        turnstile.stop()


def test_a_controller_with_another_key_is_refused_and_keeps_its_key() -> None:
    cp_channel, pd_channel = channel_pair()
    theirs = secrets.token_bytes(16)
    turnstile = SimulatedTurnstile(pd_channel, ADDRESS, theirs)
    turnstile.start()
    try:
        outcome = commission(cp_channel, ADDRESS, secrets.token_bytes(16), WINDOW_S)
        assert not outcome.ok
        assert "neither" in outcome.detail
        assert outcome.seconds < WINDOW_S  # refused at once, not at the end of the window
        assert turnstile.scbk == theirs
    finally:
        turnstile.stop()


def test_a_controller_without_secure_channel_is_refused_and_sent_nothing() -> None:
    cp_channel, pd_channel = channel_pair()
    plain = PlaintextController(pd_channel, ADDRESS)
    plain.start()
    try:
        outcome = commission(cp_channel, ADDRESS, secrets.token_bytes(16), WINDOW_S)
        assert not outcome.ok and "plaintext" in outcome.detail
        time.sleep(0.5)
        assert plain.commands == []  # not even a KEYSET: a key sent in plaintext would be a key given away
    finally:
        plain.stop()


def test_the_window_closes_and_after_it_nothing_uses_the_default_key() -> None:
    cp_channel, pd_channel = channel_pair()
    outcome = commission(cp_channel, ADDRESS, secrets.token_bytes(16), 1.0)  # nobody on the line
    assert not outcome.ok and "window closed" in outcome.detail

    late = SimulatedTurnstile(pd_channel, ADDRESS, None, install_mode=True)  # arrives after the window
    late.start()
    try:
        time.sleep(1.5)
        assert late.scbk is None and not late.is_secure()
    finally:
        late.stop()


def test_a_controller_switched_on_during_the_window_is_commissioned() -> None:
    cp_channel, pd_channel = channel_pair()
    key = secrets.token_bytes(16)
    thread, result = _commission_in_background(cp_channel, key, WINDOW_S)
    time.sleep(1.0)
    turnstile = SimulatedTurnstile(pd_channel, ADDRESS, None, install_mode=True)
    turnstile.start()
    try:
        thread.join(WINDOW_S + 5)
        assert result and result[0].ok, result
        assert turnstile.scbk == key
    finally:
        turnstile.stop()


@pytest.mark.parametrize("key", [SCBK_D, b"short"])
def test_commissioning_refuses_a_useless_new_key(key: bytes) -> None:
    cp_channel, _ = channel_pair()
    with pytest.raises(ValueError, match="SCBK"):
        commission(cp_channel, ADDRESS, key, WINDOW_S)


def test_the_window_is_at_most_ten_minutes() -> None:
    cp_channel, _ = channel_pair()
    with pytest.raises(ValueError, match="at most"):
        commission(cp_channel, ADDRESS, secrets.token_bytes(16), 601)


# --- the command, over a pty through pyserial ------------------------------------------------------------


@pytest.fixture
def pty_port() -> Iterator[tuple[str, int]]:
    controller_end, device_end = os.openpty()
    for fd in (controller_end, device_end):
        tty.setraw(fd)
    path = os.ttyname(device_end)
    os.close(device_end)
    yield path, controller_end
    os.close(controller_end)


def _commission_args(port: str, key_dir: Path, *extra: str) -> list[str]:
    return ["commission", "--site", str(ROOT / "zones.yaml"), "--gate", "STA-G1", "--port", port,
            "--key-dir", str(key_dir), *extra]  # fmt: skip


def test_the_commission_command_keys_a_controller_and_journals_it(tmp_path: Path, pty_port: tuple[str, int]) -> None:
    port, controller_fd = pty_port
    turnstile = SimulatedTurnstile(FdChannel(os.dup(controller_fd)), ADDRESS, None, install_mode=True)
    turnstile.start()
    try:
        result = CliRunner().invoke(main, _commission_args(port, tmp_path / "keys", "--window", "20"))
    finally:
        turnstile.stop()
    assert result.exit_code == 0, result.output
    path = key_path(tmp_path / "keys", "STA-G1")
    key = load_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert turnstile.scbk == key
    assert key.hex() not in result.output
    [record] = [json.loads(line) for line in (tmp_path / "keys" / "commissioning.log").read_text().splitlines()]
    assert record["ok"] is True and record["gate"] == "STA-G1" and record["address"] == ADDRESS
    assert record["key"] == key_fingerprint(key) and key.hex() not in json.dumps(record)


def test_the_commission_command_fails_loudly_and_journals_the_failure(
    tmp_path: Path, pty_port: tuple[str, int]
) -> None:
    port, _ = pty_port  # nobody on the line
    result = CliRunner().invoke(main, _commission_args(port, tmp_path / "keys", "--window", "5"))
    assert result.exit_code != 0
    assert "not commissioned" in result.output and "window closed" in result.output
    [record] = [json.loads(line) for line in (tmp_path / "keys" / "commissioning.log").read_text().splitlines()]
    assert record["ok"] is False


def test_the_commission_command_refuses_a_window_under_five_seconds(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, _commission_args("/dev/null", tmp_path, "--window", "2"))
    assert result.exit_code != 0 and "--window" in result.output
