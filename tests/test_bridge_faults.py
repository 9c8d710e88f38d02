"""Attacks and faults on the RS-485 line, with libosdp on both ends: nothing but a genuine command moves the relay.

An intruder on the bus replays a captured secure-channel frame, flips a bit in one (and fixes its CRC), or
sends a well-formed plaintext relay command; the line is cut and mended a hundred times; a relay command is
caught by a cut. The turnstile counts every relay pulse that reaches it.
"""

from __future__ import annotations

import queue
import random
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from firmware_bridge.channels import CuttableLine, MemoryChannel, channel_pair
from firmware_bridge.controller import OUTPUT_DEADLINE_S, ControllerError, ControllerLink
from firmware_bridge.turnstile import SimulatedTurnstile, TurnstileState

ADDRESS = 7
WAIT_S = 5.0
SC_WAIT_S = 15.0  # generous: a disturbed link reconnects by itself, at worst after libosdp's 8 s of retries
CMD_OUT = 0x68
SOM = 0x53
SCS_17 = 0x17  # secure channel message: MAC and encrypted data


@dataclass
class Line:
    turnstile: SimulatedTurnstile
    link: ControllerLink
    wire: CuttableLine  # the panel's end: cut, mend, record
    device_end: MemoryChannel  # where an intruder's bytes arrive at the controller
    events: queue.Queue[tuple[int, str]]


@pytest.fixture
def line() -> Iterator[Line]:
    cp_channel, pd_channel = channel_pair()
    wire = CuttableLine(cp_channel, record=True)
    key = secrets.token_bytes(16)
    turnstile = SimulatedTurnstile(pd_channel, ADDRESS, key)
    link = ControllerLink(wire, {ADDRESS: key})
    events: queue.Queue[tuple[int, str]] = queue.Queue()
    link.add_listener(lambda address, kind: events.put((address, kind)))
    turnstile.start()
    link.start()
    try:
        assert link.wait_secure(ADDRESS, SC_WAIT_S)
        yield Line(turnstile, link, wire, pd_channel, events)
    finally:
        link.stop()
        turnstile.stop()


# --- OSDP frames -----------------------------------------------------------------------------------


def crc16(data: bytes) -> int:
    """OSDP's CRC-16 (CRC-16/AUG-CCITT: polynomial 0x1021, initial value 0x1D0F)."""
    crc = 0x1D0F
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def frames(stream: bytes) -> list[bytes]:
    """Split what went over the wire into OSDP frames (each starting at SOM, without the 0xFF mark)."""
    out, i = [], 0
    while (i := stream.find(bytes([SOM]), i)) >= 0 and i + 4 <= len(stream):
        length = stream[i + 2] | stream[i + 3] << 8
        if length < 8 or i + length > len(stream):
            i += 1
            continue
        frame = stream[i : i + length]
        if crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little"):
            out.append(frame)
            i += length
        else:
            i += 1
    return out


def secure_output_frames(sent: list[bytes]) -> list[bytes]:
    """The panel's secure-channel relay commands: SCB type 0x17 and command code osdp_OUT (left in clear)."""
    found = []
    for frame in frames(b"".join(sent)):
        has_scb = frame[4] & 0x08
        if has_scb and frame[5] == 2 and frame[6] == SCS_17 and frame[7] == CMD_OUT:
            found.append(frame)
    return found


def with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


class PlaintextController:
    """A controller that speaks OSDP without any secure channel (as old or cheap ones do): it answers ID and
    CAP (offering no communication security), acknowledges every other command and keeps the codes it got."""

    def __init__(self, channel: MemoryChannel, address: int) -> None:
        self._channel = channel
        self._address = address
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.commands: list[int] = []  # every command code but POLL, ID and CAP

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _serve(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            buffer += self._channel.read(256)
            found = frames(buffer)
            if not found:
                time.sleep(0.005)
                continue
            buffer = b""
            for frame in found:
                if frame[1] == self._address:
                    self._answer(frame)

    def _answer(self, frame: bytes) -> None:
        control, code = frame[4], frame[5] if not frame[4] & 0x08 else -1
        if code == 0x61:  # osdp_ID -> osdp_PDID
            reply, data = 0x45, bytes([0xCA, 0xFE, 0x00, 1, 1, 1, 0, 0, 0, 1, 0, 0])
        elif code == 0x62:  # osdp_CAP -> osdp_PDCAP: output control, contacts; communication security: none
            reply, data = 0x46, bytes([2, 1, 1, 1, 1, 3, 9, 0, 0])
        else:
            if code not in (0x60, -1):
                self.commands.append(code)
            reply, data = 0x40, b""  # osdp_ACK
        body = bytes([SOM, self._address | 0x80, 0, 0, (control & 0x03) | 0x04, reply]) + data
        body = body[:2] + (len(body) + 2).to_bytes(2, "little") + body[4:]
        self._channel.write(b"\xff" + with_crc(body))


def test_frame_helpers_read_what_libosdp_writes() -> None:
    plain_poll = with_crc(bytes([SOM, ADDRESS, 8, 0, 0x04, 0x60]))
    assert frames(b"\xff" + plain_poll + b"\xff" + plain_poll) == [plain_poll, plain_poll]
    assert frames(plain_poll[:-1] + b"\x00") == []  # a bad CRC is not a frame


# --- the intruder --------------------------------------------------------------------------------------


def _capture_a_genuine_pulse(line: Line) -> bytes:
    line.link.grant(ADDRESS, 500, "GO")
    assert line.turnstile.wait_pulses(1, WAIT_S)
    assert line.turnstile.wait_state(TurnstileState.LOCKED, WAIT_S)  # the 0.5 s pulse is over
    captured = secure_output_frames(line.wire.sent())
    assert len(captured) == 1, "the genuine relay command was not seen on the wire"
    return captured[0]


def _inject_and_settle(line: Line, frame: bytes) -> None:
    """Put the intruder's frame on the wire, then let the link recover before anyone looks."""
    line.device_end.inject(b"\xff" + frame)
    time.sleep(1.0)  # the controller has read it by now, and thrown its secure channel away if it was fooled
    assert line.link.wait_secure(ADDRESS, SC_WAIT_S), "the link did not recover after the intrusion"


def _flip_a_data_bit(frame: bytes) -> bytes:
    """Change one bit of the encrypted payload (between the command code and the MAC) and fix the CRC."""
    body = bytearray(frame[:-2])
    body[8] ^= 0x01  # first encrypted byte after osdp_OUT
    return with_crc(bytes(body))


def _plaintext_output(_captured: bytes) -> bytes:
    """A well-formed plaintext osdp_OUT: relay 0, timed on for 2 s, as someone without the key would send."""
    body = bytes([SOM, ADDRESS, 0, 0, 0x04, CMD_OUT, 0x00, 0x05, 20, 0x00])  # sequence 0: "start afresh"
    body = body[:2] + (len(body) + 2).to_bytes(2, "little") + body[4:]
    return with_crc(body)


def _replay_then_plaintext(captured: bytes) -> bytes:
    """The replay makes the controller drop its secure channel; the plaintext command follows at once."""
    return b"\xff".join([captured, _plaintext_output(captured)])


@pytest.mark.parametrize(
    "forge",
    [lambda f: f, _flip_a_data_bit, _plaintext_output, _replay_then_plaintext],
    ids=["replayed", "bit-flipped", "plaintext", "replay-then-plaintext"],
)
def test_an_injected_relay_frame_never_reaches_the_relay(line: Line, forge: object) -> None:
    captured = _capture_a_genuine_pulse(line)
    assert callable(forge)
    forged = forge(captured)
    assert b"\xff".join(frames(b"\xff" + forged)) == forged  # valid frames by CRC: only the secure channel can tell

    _inject_and_settle(line, forged)

    # Proof that commands still flow after the intrusion: a deny arrives, in order, after anything sent before.
    line.link.deny(ADDRESS, "BARRIER")
    assert line.turnstile.wait_until(lambda t: t.text == "BARRIER", WAIT_S)
    assert line.turnstile.relay_pulses == 1  # only the genuine one
    assert line.turnstile.state == TurnstileState.LOCKED


# --- cuts ----------------------------------------------------------------------------------------------


def test_a_pulse_caught_by_a_cut_is_dropped_never_delivered_late(line: Line) -> None:
    line.wire.cut()
    try:
        line.link.grant(ADDRESS, 1000, "GO")  # the panel still believes the controller is there
    except ControllerError:
        pytest.fail("the grant should have been queued: the cut is not detected yet")
    time.sleep(OUTPUT_DEADLINE_S + 0.5)  # past the deadline, while libosdp is still retrying the frame
    line.wire.mend()

    assert line.link.wait_secure(ADDRESS, SC_WAIT_S)
    line.link.deny(ADDRESS, "BARRIER")
    assert line.turnstile.wait_until(lambda t: t.text == "BARRIER", WAIT_S)
    assert line.turnstile.relay_pulses == 0


def test_a_hundred_cuts_of_the_controller_line_move_the_relay_never(line: Line) -> None:
    """The RS-485 pair is cut and mended 100 times, for 10 to 200 ms, with denials sent meanwhile."""
    rng = random.Random(6)
    refused = 0
    for cycle in range(100):
        line.wire.cut()
        if cycle % 3 == 0:
            try:
                line.link.deny(ADDRESS, f"D{cycle}")
            except ControllerError:
                refused += 1  # the link already knows the controller is away
        time.sleep(rng.uniform(0.01, 0.2))
        line.wire.mend()
        time.sleep(rng.uniform(0.0, 0.05))

    assert line.link.wait_secure(ADDRESS, SC_WAIT_S)
    line.link.deny(ADDRESS, "BARRIER")
    assert line.turnstile.wait_until(lambda t: t.text == "BARRIER", WAIT_S)
    assert line.turnstile.relay_pulses == 0
    assert "green" not in line.turnstile.led_history
    print(f"\n100 cuts: {refused} denials refused while the controller was known away")
