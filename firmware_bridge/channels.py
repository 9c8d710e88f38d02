"""Byte channels for libosdp: an in-memory pair (tests) and a pty pair (a serial line inside one process).

libosdp polls `read` from its refresh thread, so both ends must return b"" at once when nothing is waiting.
"""

from __future__ import annotations

import contextlib
import errno
import os
import termios
import threading
import tty

import osdp

_MAX_BUFFERED = 64 * 1024  # a stuck reader must not grow memory without bound; RS-485 drops bytes too


class _Pipe:
    """One direction of a link: a thread-safe byte buffer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = bytearray()

    def put(self, data: bytes) -> int:
        with self._lock:
            room = _MAX_BUFFERED - len(self._buf)
            accepted = data[: max(room, 0)]
            self._buf.extend(accepted)
            return len(accepted)

    def take(self, max_bytes: int) -> bytes:
        with self._lock:
            chunk = bytes(self._buf[:max_bytes])
            del self._buf[:max_bytes]
            return chunk

    def clear(self) -> None:
        with self._lock:
            self._buf.clear()


class MemoryChannel(osdp.Channel):  # type: ignore[misc]  # libosdp ships no type hints
    """One end of an in-memory link: writes go to the peer's inbox, reads drain our own."""

    def __init__(self, inbox: _Pipe, outbox: _Pipe) -> None:
        super().__init__()
        self._inbox = inbox
        self._outbox = outbox

    def read(self, max_bytes: int) -> bytes:
        return self._inbox.take(max_bytes)

    def write(self, buf: bytes) -> int:
        return self._outbox.put(bytes(buf))

    def flush(self) -> None:
        # libosdp flushes to drop a half-received frame; discard what we have not read yet.
        self._inbox.clear()

    def close(self) -> None:
        """Nothing to release; present so both channel kinds close the same way."""


def channel_pair() -> tuple[MemoryChannel, MemoryChannel]:
    """(cp_channel, pd_channel): what one writes, the other reads."""
    to_pd, to_cp = _Pipe(), _Pipe()
    return MemoryChannel(inbox=to_cp, outbox=to_pd), MemoryChannel(inbox=to_pd, outbox=to_cp)


class FdChannel(osdp.Channel):  # type: ignore[misc]  # libosdp ships no type hints
    """A channel over a non-blocking file descriptor (one side of a pty, later a serial device)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._lock = threading.Lock()
        os.set_blocking(fd, False)

    def read(self, max_bytes: int) -> bytes:
        with self._lock:
            if self._fd < 0:
                return b""
            try:
                return os.read(self._fd, max_bytes)
            except BlockingIOError:
                return b""
            except OSError as exc:
                # EIO: the other side of the pty is closed, which a serial line shows as silence.
                if exc.errno == errno.EIO:
                    return b""
                raise

    def write(self, buf: bytes) -> int:
        with self._lock:
            if self._fd < 0:
                return 0
            try:
                return os.write(self._fd, bytes(buf))
            except BlockingIOError:
                return 0
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return 0
                raise

    def flush(self) -> None:
        with self._lock:
            if self._fd >= 0:
                # A pty side may refuse the flush; there is nothing buffered to lose then.
                with contextlib.suppress(termios.error):
                    termios.tcflush(self._fd, termios.TCIFLUSH)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def pty_pair() -> tuple[FdChannel, FdChannel]:
    """(cp_channel, pd_channel) over a pseudo-terminal in raw mode, so bytes pass unaltered like on RS-485."""
    controller_fd, device_fd = os.openpty()
    for fd in (controller_fd, device_fd):
        tty.setraw(fd)
    return FdChannel(controller_fd), FdChannel(device_fd)
