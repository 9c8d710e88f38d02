"""The serial line to real controllers (pyserial), tested over a pseudo-terminal, which pyserial opens like any
serial port: the panel's end is the pty's device path, the simulated controller sits on the other end."""

from __future__ import annotations

import os
import secrets
import tty
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import serial

from firmware_bridge.channels import FdChannel
from firmware_bridge.controller import ControllerLink
from firmware_bridge.serial_line import SerialChannel, open_port
from firmware_bridge.turnstile import SimulatedTurnstile

ADDRESS = 3
WAIT_S = 5.0


@pytest.fixture
def pty_port() -> Iterator[tuple[str, int]]:
    """(device path the panel opens, fd of the controller's end)."""
    controller_end, device_end = os.openpty()
    for fd in (controller_end, device_end):
        tty.setraw(fd)
    path = os.ttyname(device_end)
    os.close(device_end)  # pyserial opens it by name, as it would /dev/ttyUSB0
    yield path, controller_end
    os.close(controller_end)


def test_libosdp_runs_a_secure_channel_and_a_grant_over_pyserial(pty_port: tuple[str, int]) -> None:
    path, controller_fd = pty_port
    key = secrets.token_bytes(16)
    line = SerialChannel(path, 115200)
    turnstile = SimulatedTurnstile(FdChannel(os.dup(controller_fd)), ADDRESS, key)
    link = ControllerLink(line, {ADDRESS: key})
    turnstile.start()
    link.start()
    try:
        assert link.wait_secure(ADDRESS, 10.0)
        link.grant(ADDRESS, 700, "GO")
        assert turnstile.wait_pulses(1, WAIT_S)
        assert turnstile.pulse_durations_ms == [700]
    finally:
        link.stop()
        turnstile.stop()
        line.close()


def test_a_bus_is_driven_by_one_process_only(pty_port: tuple[str, int]) -> None:
    path, _ = pty_port
    first = SerialChannel(path)
    try:
        with pytest.raises(serial.SerialException, match="lock"):
            SerialChannel(path)
    finally:
        first.close()


@pytest.mark.parametrize("baud", [0, 1200, 250000])
def test_only_osdp_speeds_are_accepted(pty_port: tuple[str, int], baud: int) -> None:
    with pytest.raises(ValueError, match="OSDP speed"):
        open_port(pty_port[0], baud)


class FlakyPort:
    """A stand-in for pyserial's Serial: fails on demand, like a USB adapter pulled out."""

    opened: ClassVar[list[FlakyPort]] = []
    refuse_open: ClassVar[bool] = False

    def __init__(self, *_args: Any, **_kw: Any) -> None:
        if FlakyPort.refuse_open:
            raise serial.SerialException("no such device")
        self.broken = False
        self.written: list[bytes] = []
        FlakyPort.opened.append(self)

    def read(self, n: int) -> bytes:
        if self.broken:
            raise serial.SerialException("device reports readiness to read but returned no data")
        return b"x"[:n]

    def write(self, data: bytes) -> int:
        if self.broken:
            raise OSError(5, "Input/output error")
        self.written.append(data)
        return len(data)

    def reset_input_buffer(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_an_unplugged_adapter_reads_as_silence_and_is_reopened() -> None:
    FlakyPort.opened, FlakyPort.refuse_open = [], False
    clock = [100.0]
    line = SerialChannel("/dev/ttyUSB9", opener=FlakyPort, reopen_s=1.0, monotonic=lambda: clock[0])
    assert line.read(1) == b"x"

    FlakyPort.opened[0].broken = True
    FlakyPort.refuse_open = True
    assert line.read(1) == b""  # the failure is silence: libosdp reports the controllers offline
    assert line.write(b"frame") == 0
    assert not line.is_open
    clock[0] += 5
    assert line.read(1) == b""  # still unplugged: the reopen attempt fails quietly

    FlakyPort.refuse_open = False
    assert line.read(1) == b""  # too soon after the last attempt
    clock[0] += 1.5
    assert line.read(1) == b"x"  # plugged back in: open again
    assert len(FlakyPort.opened) == 2
    assert line.write(b"frame") == 5
    line.close()
    clock[0] += 10
    assert line.read(1) == b"" and len(FlakyPort.opened) == 2  # closed on purpose: never reopened
