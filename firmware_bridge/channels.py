"""Byte channels for libosdp: an in-memory pair or multidrop bus (tests), a pty pair (a serial line inside one
process) and a line that can be cut (tests of link loss). The serial line to real controllers is in serial_line.

libosdp polls `read` from its refresh thread, so every end must return b"" at once when nothing is waiting.
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

    def inject(self, data: bytes) -> None:
        """Bytes arrive at this end as if the other end had sent them: an intruder on the wire (tests)."""
        self._inbox.put(bytes(data))

    def close(self) -> None:
        """Nothing to release; present so both channel kinds close the same way."""


def channel_pair() -> tuple[MemoryChannel, MemoryChannel]:
    """(cp_channel, pd_channel): what one writes, the other reads."""
    to_pd, to_cp = _Pipe(), _Pipe()
    return MemoryChannel(inbox=to_cp, outbox=to_pd), MemoryChannel(inbox=to_pd, outbox=to_cp)


class _Fanout(_Pipe):
    """What the panel sends on a multidrop bus: every device hears it (each keeps only frames for its address)."""

    def __init__(self, inboxes: list[_Pipe]) -> None:
        super().__init__()
        self._inboxes = inboxes

    def put(self, data: bytes) -> int:
        for inbox in self._inboxes:
            inbox.put(data)
        return len(data)


def memory_bus(devices: int) -> tuple[MemoryChannel, list[MemoryChannel]]:
    """(cp_channel, [pd_channel, ...]): one RS-485 bus with `devices` controllers on it, in memory."""
    if devices < 1:
        raise ValueError("a bus needs at least one device")
    to_cp = _Pipe()
    inboxes = [_Pipe() for _ in range(devices)]
    return MemoryChannel(inbox=to_cp, outbox=_Fanout(inboxes)), [MemoryChannel(inbox=i, outbox=to_cp) for i in inboxes]


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


class CuttableLine(osdp.Channel):  # type: ignore[misc]  # libosdp ships no type hints
    """A channel whose wire can be cut and mended, and whose outgoing bytes can be recorded (tests, drills).

    While cut, what we send is lost and what arrives is thrown away, as on an RS-485 pair cut in two.
    """

    def __init__(self, inner: osdp.Channel, *, record: bool = False) -> None:
        super().__init__()
        self._inner = inner
        self._cut = threading.Event()
        self._record = record
        self._sent_lock = threading.Lock()
        self._sent: list[bytes] = []

    def cut(self) -> None:
        self._cut.set()

    def mend(self) -> None:
        self._cut.clear()

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def sent(self) -> list[bytes]:
        """Every write that went onto the wire, in order (only when recording)."""
        with self._sent_lock:
            return list(self._sent)

    def read(self, max_bytes: int) -> bytes:
        data: bytes = self._inner.read(max_bytes)
        return b"" if self._cut.is_set() else data

    def write(self, buf: bytes) -> int:
        data = bytes(buf)
        if self._cut.is_set():
            return len(data)
        if self._record:
            with self._sent_lock:
                self._sent.append(data)
        written: int = self._inner.write(data)
        return written

    def flush(self) -> None:
        self._inner.flush()

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()
