"""The RS-485 line to real controllers: a libosdp channel over pyserial.

OSDP runs 8N1 at 9600 baud by default (115200 where the controllers are configured for it). USB adapters with
automatic direction control need nothing more; adapters that switch direction on RTS need `rs485=True`, which
asks the kernel to do it (Linux RS-485 mode).

An adapter that is unplugged must not take the bridge down: a failing port reads as silence (libosdp then
reports the controllers offline) and is reopened every `reopen_s` until it answers again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import osdp
import serial
import serial.rs485

log = logging.getLogger(__name__)

OSDP_BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400)
REOPEN_S = 1.0

Opener = Callable[..., Any]  # serial.serial_for_url and stand-ins with its signature


def open_port(port: str, baudrate: int, rs485: bool = False, opener: Opener = serial.serial_for_url) -> Any:
    """Open `port` (a device path such as /dev/ttyUSB0, or a pyserial URL) for OSDP; raises serial.SerialException."""
    if baudrate not in OSDP_BAUD_RATES:
        raise ValueError(f"{baudrate} baud is not an OSDP speed ({', '.join(map(str, OSDP_BAUD_RATES))})")
    line = opener(
        port,
        baudrate=baudrate,
        bytesize=serial.EIGHTBITS,
        parity=serial.PARITY_NONE,
        stopbits=serial.STOPBITS_ONE,
        timeout=0,  # libosdp polls: a read returns what is there, at once
        write_timeout=0,
        exclusive=True,  # two processes driving one bus would garble every frame
    )
    if rs485:
        try:
            line.rs485_mode = serial.rs485.RS485Settings()
        except (ValueError, OSError) as exc:
            line.close()
            raise serial.SerialException(f"{port}: the driver refused RS-485 mode: {exc}") from None
    return line


class SerialChannel(osdp.Channel):  # type: ignore[misc]  # libosdp ships no type hints
    """A libosdp channel over a serial port, opened at construction (raises if it cannot be opened then)."""

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        *,
        rs485: bool = False,
        reopen_s: float = REOPEN_S,
        opener: Opener = serial.serial_for_url,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.port = port
        self._baudrate = baudrate
        self._rs485 = rs485
        self._reopen_s = reopen_s
        self._opener = opener
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._closed = False
        self._next_try = 0.0
        self._line: Any = open_port(port, baudrate, rs485, opener)

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._line is not None

    def _usable(self) -> Any:
        """The open port, reopening a failed one when its time has come; None while it is down. Lock held."""
        if self._line is None and not self._closed and self._monotonic() >= self._next_try:
            try:
                self._line = open_port(self.port, self._baudrate, self._rs485, self._opener)
                log.warning("serial line %s: open again", self.port)
            except (serial.SerialException, OSError) as exc:
                self._next_try = self._monotonic() + self._reopen_s
                log.debug("serial line %s: still down: %s", self.port, exc)
        return self._line

    def _failed(self, exc: Exception) -> None:
        log.error("serial line %s failed (%s); the controllers on it will be reported offline", self.port, exc)
        with contextlib.suppress(serial.SerialException, OSError):
            self._line.close()
        self._line = None
        self._next_try = self._monotonic() + self._reopen_s

    def read(self, max_bytes: int) -> bytes:
        with self._lock:
            line = self._usable()
            if line is None:
                return b""
            try:
                return bytes(line.read(max_bytes))
            except (serial.SerialException, OSError) as exc:
                self._failed(exc)
                return b""

    def write(self, buf: bytes) -> int:
        with self._lock:
            line = self._usable()
            if line is None:
                return 0
            try:
                return int(line.write(bytes(buf)) or 0)
            except (serial.SerialException, OSError) as exc:
                self._failed(exc)
                return 0

    def flush(self) -> None:
        # libosdp flushes to drop a half-received frame: discard unread input.
        with self._lock:
            if self._line is None:
                return
            try:
                self._line.reset_input_buffer()
            except (serial.SerialException, OSError) as exc:
                self._failed(exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            line, self._line = self._line, None
        if line is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                line.close()
