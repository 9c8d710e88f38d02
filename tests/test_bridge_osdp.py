"""The OSDP side of the bridge: libosdp's real ControlPanel and PeripheralDevice over memory and pty lines."""

from __future__ import annotations

import contextlib
import queue
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import osdp
import pytest

from firmware_bridge.channels import MemoryChannel, channel_pair, memory_bus, pty_pair
from firmware_bridge.controller import ControllerLink, NotSecureError, display_text
from firmware_bridge.door import DoorMonitor
from firmware_bridge.keys import SCBK_D
from firmware_bridge.turnstile import SimulatedTurnstile, TurnstileState
from tests.test_bridge_faults import PlaintextController

ADDRESS = 7
WAIT_S = 5.0  # generous: every wait returns as soon as its condition holds
SC_WAIT_S = 10.0
NEGATIVE_WAIT_S = 2.0  # how long a controller gets to (wrongly) come up before we call it refused


@dataclass
class Rig:
    turnstile: SimulatedTurnstile
    link: ControllerLink
    events: queue.Queue[tuple[int, str]]

    def next_kind(self, wanted: str, timeout: float = WAIT_S) -> str | None:
        """The next controller event of kind `wanted`, skipping others; None when `timeout` s pass first."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                _address, kind = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if kind == wanted:
                return kind
        return None


def _start(cp_channel: osdp.Channel, pd_channel: osdp.Channel, held_open_s: float = 8.0) -> Rig:
    key = secrets.token_bytes(16)
    turnstile = SimulatedTurnstile(pd_channel, ADDRESS, key)
    link = ControllerLink(cp_channel, {ADDRESS: key}, held_open_s=held_open_s)
    events: queue.Queue[tuple[int, str]] = queue.Queue()
    link.add_listener(lambda address, kind: events.put((address, kind)))
    turnstile.start()
    link.start()
    return Rig(turnstile, link, events)


@pytest.fixture
def rig() -> Iterator[Rig]:
    cp_channel, pd_channel = channel_pair()
    r = _start(cp_channel, pd_channel, held_open_s=0.3)
    try:
        assert r.link.wait_secure(ADDRESS, SC_WAIT_S), "secure channel did not come up"
        yield r
    finally:
        r.link.stop()
        r.turnstile.stop()


def test_secure_channel_comes_up_on_both_ends(rig: Rig) -> None:
    assert rig.link.is_secure(ADDRESS)
    assert rig.link.is_online(ADDRESS)
    assert rig.turnstile.is_secure()
    assert rig.next_kind("controller_online") == "controller_online"


def test_grant_pulses_the_relay_once_for_the_pulse_length(rig: Rig) -> None:
    rig.link.grant(ADDRESS, 1500, "ACCESS GRANTED")

    assert rig.turnstile.wait_pulses(1, WAIT_S)
    assert rig.turnstile.wait_until(lambda t: t.text == "ACCESS GRANTED", WAIT_S)
    assert rig.turnstile.relay_pulses == 1
    assert rig.turnstile.pulse_durations_ms == [1500]
    assert rig.turnstile.led_history == ["green"]
    buzzer = rig.turnstile.buzzer
    assert buzzer is not None and buzzer.on_ms == 100 and buzzer.repeats == 1


def test_pulse_is_rounded_up_to_osdp_timer_units_and_capped(rig: Rig) -> None:
    rig.link.grant(ADDRESS, 1234, "A")
    rig.link.grant(ADDRESS, 30_000, "B")  # the binding carries one byte of 100 ms units

    assert rig.turnstile.wait_pulses(2, WAIT_S)
    assert rig.turnstile.pulse_durations_ms == [1300, 25_500]


def test_deny_shows_red_beeps_long_and_never_moves_the_relay(rig: Rig) -> None:
    rig.link.deny(ADDRESS, "DENIED revoked")

    assert rig.turnstile.wait_until(lambda t: t.text == "DENIED revoked", WAIT_S)
    assert rig.turnstile.led == "red"
    buzzer = rig.turnstile.buzzer
    assert buzzer is not None and buzzer.on_ms == 1000
    assert rig.turnstile.relay_pulses == 0
    assert rig.turnstile.state == TurnstileState.LOCKED


def test_text_is_cut_to_what_a_display_shows() -> None:
    assert display_text("x" * 40) == "x" * 32
    assert display_text("Zutritt verweigert: ä\n") == "Zutritt verweigert: ??"


def test_passage_is_only_possible_after_a_release_and_is_reported(rig: Rig) -> None:
    assert rig.turnstile.pass_person() is False  # the arm is locked: nobody gets through
    assert rig.turnstile.state == TurnstileState.LOCKED

    rig.link.grant(ADDRESS, 5000, "GO")
    assert rig.turnstile.wait_state(TurnstileState.RELEASED, WAIT_S)
    assert rig.turnstile.pass_person() is True

    assert rig.next_kind("passage") == "passage"
    assert rig.turnstile.state == TurnstileState.LOCKED
    assert rig.turnstile.pass_person() is False  # one grant, one person


def test_relay_pulse_ends_and_the_turnstile_relocks(rig: Rig) -> None:
    rig.link.grant(ADDRESS, 100, "GO")
    assert rig.turnstile.wait_pulses(1, WAIT_S)
    assert rig.turnstile.wait_state(TurnstileState.LOCKED, WAIT_S)


def test_forcing_the_arm_is_reported_as_door_forced(rig: Rig) -> None:
    rig.turnstile.force()
    assert rig.turnstile.state == TurnstileState.FORCED
    assert rig.next_kind("door_forced") == "door_forced"


def test_door_kept_open_after_a_grant_is_reported_as_held_open(rig: Rig) -> None:
    assert rig.turnstile.hold_open() is False  # not released: it would be forcing, not holding
    rig.link.grant(ADDRESS, 2000, "GO")
    assert rig.turnstile.wait_state(TurnstileState.RELEASED, WAIT_S)
    assert rig.turnstile.hold_open() is True

    assert rig.next_kind("door_held_open") == "door_held_open"
    assert rig.turnstile.state == TurnstileState.HELD_OPEN


def test_tamper_switch_is_reported_and_reset_relocks(rig: Rig) -> None:
    rig.turnstile.tamper()
    assert rig.next_kind("tamper") == "tamper"
    rig.turnstile.reset()
    assert rig.turnstile.state == TurnstileState.LOCKED
    assert rig.turnstile.inputs == (0, 0, 0)


def test_controller_with_another_key_never_gets_secure_channel_and_grant_refuses() -> None:
    cp_channel, pd_channel = channel_pair()
    turnstile = SimulatedTurnstile(pd_channel, ADDRESS, secrets.token_bytes(16))
    link = ControllerLink(cp_channel, {ADDRESS: secrets.token_bytes(16)})
    turnstile.start()
    link.start()
    try:
        assert not link.wait_secure(ADDRESS, NEGATIVE_WAIT_S)
        assert not turnstile.is_secure()
        with pytest.raises(NotSecureError):
            link.grant(ADDRESS, 1000, "GO")
        with pytest.raises(NotSecureError):
            link.deny(ADDRESS, "NO")
        assert turnstile.relay_pulses == 0
        assert turnstile.led_history == []
    finally:
        link.stop()
        turnstile.stop()


def test_plaintext_controller_is_refused() -> None:
    """A controller offering no secure channel would take plaintext commands; the link must never send it any."""
    cp_channel, pd_channel = channel_pair()
    plain = PlaintextController(pd_channel, ADDRESS)
    link = ControllerLink(cp_channel, {ADDRESS: secrets.token_bytes(16)})
    plain.start()
    link.start()
    try:
        assert not link.wait_secure(ADDRESS, NEGATIVE_WAIT_S)
        assert not link.is_online(ADDRESS)
        with pytest.raises(NotSecureError):
            link.grant(ADDRESS, 1000, "GO")
        time.sleep(0.5)
        assert plain.commands == []
    finally:
        link.stop()
        plain.stop()


def test_the_plaintext_controller_of_these_tests_does_speak_osdp() -> None:
    """The refusal above is the panel's doing: without enforce-secure, libosdp would drive that controller."""
    cp_channel, pd_channel = channel_pair()
    plain = PlaintextController(pd_channel, ADDRESS)
    info = osdp.PDInfo(ADDRESS, cp_channel, scbk=secrets.token_bytes(16))
    panel = osdp.ControlPanel([info], log_level=osdp.LogLevel.Error)
    plain.start()
    panel.start()
    try:
        assert panel.online_wait(ADDRESS, timeout=5) and not panel.is_sc_active(ADDRESS)
        panel.submit_command(
            ADDRESS, {"command": osdp.Command.Output, "output_no": 0, "control_code": 5, "timer_count": 5}
        )
        deadline = time.monotonic() + WAIT_S
        while 0x68 not in plain.commands and time.monotonic() < deadline:
            time.sleep(0.02)
        assert 0x68 in plain.commands  # osdp_OUT, in plaintext: what the bridge must never let happen
    finally:
        panel.stop()
        plain.stop()


@pytest.mark.parametrize("scbk", [None, b"", b"short", secrets.token_bytes(32), "00" * 16])
def test_a_controller_without_a_proper_key_is_a_value_error(scbk: object) -> None:
    cp_channel, _pd_channel = channel_pair()
    with pytest.raises(ValueError, match="SCBK"):
        ControllerLink(cp_channel, {ADDRESS: scbk})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="SCBK"):
        SimulatedTurnstile(_pd_channel, ADDRESS, scbk)  # type: ignore[arg-type]


@pytest.mark.parametrize("scbk", [SCBK_D, bytes(16), b"\xff" * 16], ids=["SCBK-D", "zeros", "ones"])
def test_the_panel_refuses_to_use_the_default_key_or_a_toy_key(scbk: bytes) -> None:
    cp_channel, _ = channel_pair()
    with pytest.raises(ValueError, match="unusable SCBK"):
        ControllerLink(cp_channel, {ADDRESS: scbk})


def _assert_refused(link: ControllerLink, turnstile: SimulatedTurnstile) -> None:
    assert not link.wait_secure(ADDRESS, NEGATIVE_WAIT_S)
    assert not link.is_online(ADDRESS)
    with pytest.raises(NotSecureError):
        link.grant(ADDRESS, 1000, "GO")
    with pytest.raises(NotSecureError):
        link.deny(ADDRESS, "NO")
    assert turnstile.relay_pulses == 0
    assert turnstile.led_history == []


def test_a_controller_still_on_the_default_key_is_refused() -> None:
    """A controller keyed with SCBK-D (never commissioned, or reset) gets no secure channel and no command."""
    cp_channel, pd_channel = channel_pair()
    turnstile = SimulatedTurnstile(pd_channel, ADDRESS, SCBK_D)
    link = ControllerLink(cp_channel, {ADDRESS: secrets.token_bytes(16)})
    turnstile.start()
    link.start()
    try:
        _assert_refused(link, turnstile)
    finally:
        link.stop()
        turnstile.stop()


def test_a_controller_in_install_mode_is_refused_and_never_keyed_by_the_bridge() -> None:
    """Only the commissioning command may use the default key; the bridge's link never falls back to it."""
    cp_channel, pd_channel = channel_pair()
    turnstile = SimulatedTurnstile(pd_channel, ADDRESS, None, install_mode=True)
    link = ControllerLink(cp_channel, {ADDRESS: secrets.token_bytes(16)})
    turnstile.start()
    link.start()
    try:
        _assert_refused(link, turnstile)
        assert turnstile.scbk is None  # no KEYSET reached it
    finally:
        link.stop()
        turnstile.stop()


def test_several_controllers_on_one_bus_each_obey_only_their_own_address() -> None:
    """A multidrop RS-485 bus as zones.yaml describes it: one panel, one line, a controller per address."""
    cp_channel, pd_channels = memory_bus(3)
    keys = {address: secrets.token_bytes(16) for address in (1, 2, 3)}
    turnstiles = {a: SimulatedTurnstile(ch, a, keys[a]) for a, ch in zip(keys, pd_channels, strict=True)}
    link = ControllerLink(cp_channel, keys)
    events: queue.Queue[tuple[int, str]] = queue.Queue()
    link.add_listener(lambda address, kind: events.put((address, kind)))
    for t in turnstiles.values():
        t.start()
    link.start()
    try:
        assert all(link.wait_secure(a, SC_WAIT_S) for a in keys)
        link.grant(2, 500, "GO")
        link.deny(3, "NO")
        assert turnstiles[2].wait_pulses(1, WAIT_S)
        assert turnstiles[3].wait_until(lambda t: t.text == "NO", WAIT_S)
        link.deny(1, "BARRIER")
        assert turnstiles[1].wait_until(lambda t: t.text == "BARRIER", WAIT_S)
        # Each address has its own command queue, so their order across addresses is not fixed: wait for each.
        assert turnstiles[2].wait_until(lambda t: t.led_history == ["green"], WAIT_S)
        assert turnstiles[3].wait_until(lambda t: t.led_history == ["red"], WAIT_S)
        assert [turnstiles[a].relay_pulses for a in (1, 2, 3)] == [0, 1, 0]

        turnstiles[3].tamper()
        seen: list[tuple[int, str]] = []
        deadline = time.monotonic() + WAIT_S
        while (3, "tamper") not in seen and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                seen.append(events.get(timeout=0.1))
        assert (3, "tamper") in seen
        assert [a for a, kind in seen if kind == "tamper"] == [3]  # reported for its own address only
    finally:
        link.stop()
        for t in turnstiles.values():
            t.stop()


def test_pty_line_carries_the_secure_channel_and_a_grant() -> None:
    cp_channel, pd_channel = pty_pair()
    r = _start(cp_channel, pd_channel)
    try:
        assert r.link.wait_secure(ADDRESS, SC_WAIT_S)
        r.link.grant(ADDRESS, 800, "GO")
        assert r.turnstile.wait_pulses(1, WAIT_S)
        assert r.turnstile.pulse_durations_ms == [800]
    finally:
        r.link.stop()
        r.turnstile.stop()
        cp_channel.close()
        pd_channel.close()


@pytest.mark.slow
def test_controller_going_silent_is_reported_offline_and_is_back_within_seconds_when_it_returns() -> None:
    cp_channel, pd_channel = channel_pair()
    r = _start(cp_channel, pd_channel)
    replacement: SimulatedTurnstile | None = None
    try:
        assert r.link.wait_secure(ADDRESS, SC_WAIT_S)
        assert r.next_kind("controller_online") == "controller_online"
        key = r.turnstile.scbk
        assert key is not None
        r.turnstile.stop()
        # libosdp gives up on a silent device after about 8 s of unanswered polls.
        assert r.next_kind("controller_offline", timeout=20) == "controller_offline"
        assert not r.link.is_online(ADDRESS)
        with pytest.raises(NotSecureError):
            r.link.grant(ADDRESS, 1000, "GO")

        time.sleep(1.5)  # it stays away a while: libosdp 3.2.9 alone would now wait 300 s before asking again
        replacement = SimulatedTurnstile(pd_channel, ADDRESS, key)  # powered on again, same key
        replacement.start()
        # The link restarts the attempt itself: back well within 10 s, not after libosdp's 300 s.
        assert r.link.wait_secure(ADDRESS, 10.0)
        assert r.next_kind("controller_online") == "controller_online"
        assert replacement.relay_pulses == 0  # coming back moves nothing
    finally:
        r.link.stop()
        if replacement is not None:
            replacement.stop()


def test_memory_channel_delivers_bytes_in_order_and_flush_drops_unread() -> None:
    cp, pd = channel_pair()
    assert isinstance(cp, MemoryChannel)
    cp.write(b"abc")
    cp.write(b"def")
    assert pd.read(4) == b"abcd"
    pd.flush()
    assert pd.read(10) == b""
    pd.write(b"xyz")
    assert cp.read(10) == b"xyz"


class TestDoorMonitor:
    def test_door_opening_without_release_is_forced(self) -> None:
        m = DoorMonitor(held_open_s=5)
        assert m.inputs(bytes([0, 1, 0]), now=10.0) == ["door_forced"]
        assert m.tick(now=100.0) == []  # a forced door is not also "held open"

    def test_door_opening_inside_the_release_is_not_forced(self) -> None:
        m = DoorMonitor(held_open_s=5)
        m.released(now=10.0, pulse_s=1.5)
        assert m.inputs(bytes([0, 1, 0]), now=11.0) == []
        assert m.inputs(bytes([1, 0, 0]), now=11.5) == ["passage"]
        # The grant is used up: the next opening is forced even inside the pulse.
        assert m.inputs(bytes([0, 1, 0]), now=11.6) == ["door_forced"]

    def test_a_grant_opens_the_door_once(self) -> None:
        m = DoorMonitor(held_open_s=5)
        m.released(now=10.0, pulse_s=3.0)
        assert m.inputs(bytes([0, 1, 0]), now=10.5) == []
        assert m.inputs(bytes([0, 0, 0]), now=11.0) == []
        assert m.inputs(bytes([0, 1, 0]), now=11.5) == ["door_forced"]  # still inside the pulse, but used

    def test_door_opening_after_the_release_is_forced(self) -> None:
        m = DoorMonitor(held_open_s=5)
        m.released(now=10.0, pulse_s=1.0)
        assert m.inputs(bytes([0, 1, 0]), now=13.0) == ["door_forced"]

    def test_held_open_is_reported_once_per_opening(self) -> None:
        m = DoorMonitor(held_open_s=5)
        m.released(now=0.0, pulse_s=1.0)
        m.inputs(bytes([0, 1, 0]), now=0.5)
        assert m.tick(now=5.4) == []
        assert m.tick(now=5.5) == ["door_held_open"]
        assert m.tick(now=9.0) == []
        assert m.inputs(bytes([0, 0, 0]), now=9.5) == []

    def test_tamper_is_reported_on_its_rising_edge_only(self) -> None:
        m = DoorMonitor(held_open_s=5)
        assert m.inputs(bytes([0, 0, 1]), now=0.0) == ["tamper"]
        assert m.inputs(bytes([0, 0, 1]), now=1.0) == []

    def test_short_report_means_inactive_inputs(self) -> None:
        m = DoorMonitor(held_open_s=5)
        assert m.inputs(bytes([1]), now=0.0) == ["passage"]
        assert m.inputs(b"", now=1.0) == []
