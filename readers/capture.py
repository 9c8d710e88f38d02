"""Frame sources: a camera, a folder of images, a video file or a network stream, all read through OpenCV.

`open_source(spec)` picks the source from the spec and checks that it yields a first frame, so a wrong spec
fails at start-up with a `SourceError` that says why, not later in the middle of a shift.
A source is iterated for BGR frames and closed when done (it is a context manager). Files are read as fast
as they decode; pacing them to real time, if wanted, is the caller's business.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
STREAM_SCHEMES = ("rtsp", "http", "https")
# Without these FFmpeg may wait minutes on a silent network stream before reporting it dropped.
STREAM_TIMEOUT_MS = 10_000


class SourceError(Exception):
    """A frame source could not be opened, or a live source dropped and did not come back."""


@dataclass(frozen=True)
class Backoff:
    """How a live source (camera, stream) is reopened after it drops: bounded attempts, doubling delays."""

    attempts: int = 5
    first_delay: float = 0.5  # seconds
    max_delay: float = 8.0

    def delays(self) -> list[float]:
        return [min(self.first_delay * 2**attempt, self.max_delay) for attempt in range(self.attempts)]


DEFAULT_BACKOFF = Backoff()


class FrameSource(ABC):
    """An iterable of BGR frames (numpy uint8 arrays, height x width x 3) that must be closed."""

    name: str  # for messages and logs; never holds a stream's password

    @abstractmethod
    def __iter__(self) -> Iterator[np.ndarray]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ImageFilesSource(FrameSource):
    """Still images, one frame each, in the given order. An unreadable image is logged and skipped."""

    def __init__(self, paths: Sequence[Path], name: str) -> None:
        self.name = name
        self._paths = list(paths)
        self._closed = False

    def __iter__(self) -> Iterator[np.ndarray]:
        for path in self._paths:
            if self._closed:
                return
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                log.warning("%s: cannot read image %s, skipped", self.name, path)
                continue
            yield frame

    def close(self) -> None:
        self._closed = True


class CaptureSource(FrameSource):
    """Frames from a `cv2.VideoCapture`. A file ends at its end; a live source is reopened when it drops.

    `connect` opens a fresh capture; it is called again on every reconnection attempt. Opening reads the
    first frame at once: OpenCV "opens" some captures that never deliver a frame.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], cv2.VideoCapture],
        *,
        cannot_open: str,
        reconnect: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self._connect = connect
        self._reconnect = reconnect
        self._sleep = sleep
        self._closed = False
        opened = self._open()
        if opened is None:
            raise SourceError(f"cannot open {name}: {cannot_open}")
        self._capture: cv2.VideoCapture = opened[0]
        self._pending: np.ndarray | None = opened[1]  # read while opening, not yet yielded

    def __iter__(self) -> Iterator[np.ndarray]:
        while not self._closed:
            if self._pending is not None:
                frame, self._pending = self._pending, None
                yield frame
                continue
            ok, frame = self._capture.read()
            if ok:
                yield frame
            elif self._reconnect is None:
                return
            else:
                self._reopen(self._reconnect)

    def close(self) -> None:
        self._closed = True
        self._capture.release()

    def _open(self) -> tuple[cv2.VideoCapture, np.ndarray] | None:
        capture = self._connect()
        if capture.isOpened():
            ok, frame = capture.read()
            if ok:
                return capture, frame
        capture.release()
        return None

    def _reopen(self, backoff: Backoff) -> None:
        self._capture.release()
        delays = backoff.delays()
        log.warning("%s dropped; reconnecting (up to %d attempts)", self.name, len(delays))
        for attempt, delay in enumerate(delays, start=1):
            self._sleep(delay)
            if self._closed:
                return
            opened = self._open()
            if opened is not None:
                self._capture, self._pending = opened
                log.info("%s reconnected at attempt %d", self.name, attempt)
                return
            log.warning("%s: reconnection attempt %d/%d failed", self.name, attempt, len(delays))
        raise SourceError(f"{self.name} dropped and did not come back after {len(delays)} attempts")


def open_source(
    spec: str, *, backoff: Backoff = DEFAULT_BACKOFF, sleep: Callable[[float], None] = time.sleep
) -> FrameSource:
    """Open a camera index ("0"), an image folder, an image or video file, or an rtsp/http(s) stream URL.

    `backoff` governs reconnection of cameras and streams; `sleep` is how it waits (tests pass a fake).
    Raises `SourceError` naming the source and the likely cause.
    """
    if spec.isascii() and spec.isdigit():
        index = int(spec)
        return CaptureSource(
            f"camera {index}",
            lambda: cv2.VideoCapture(index),
            cannot_open=f"camera index {index} not present (no /dev/video{index}?) or busy elsewhere",
            reconnect=backoff,
            sleep=sleep,
        )
    scheme = urlsplit(spec).scheme.lower()
    if scheme in STREAM_SCHEMES:
        return _open_stream(spec, backoff, sleep)
    if "://" in spec:
        raise SourceError(
            f"cannot open {_redact(spec)}: only {', '.join(STREAM_SCHEMES)} streams are supported"
        )
    path = Path(spec)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise SourceError(f"cannot open image folder {path}: no {'/'.join(IMAGE_SUFFIXES)} images in it")
        return ImageFilesSource(images, f"image folder {path}")
    if not path.exists():
        raise SourceError(
            f"cannot open {path}: no such file or folder "
            "(expected a camera index, an image folder, a video file or an rtsp/http(s) URL)"
        )
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFilesSource([path], f"image {path}")
    return CaptureSource(
        f"video file {path}",
        # FFmpeg explicitly: OpenCV's other backends would take a name like "img%03d.png" as an image pattern.
        lambda: cv2.VideoCapture(str(path), cv2.CAP_FFMPEG),
        cannot_open="not a video OpenCV can read (unknown container or codec, or an empty/damaged file)",
    )


def _open_stream(url: str, backoff: Backoff, sleep: Callable[[float], None]) -> CaptureSource:
    timeouts = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        STREAM_TIMEOUT_MS,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        STREAM_TIMEOUT_MS,
    ]
    return CaptureSource(
        f"stream {_redact(url)}",
        lambda: cv2.VideoCapture(url, cv2.CAP_FFMPEG, timeouts),
        cannot_open="stream unreachable, wrong path or credentials, or a codec OpenCV cannot decode",
        reconnect=backoff,
        sleep=sleep,
    )


def _redact(url: str) -> str:
    """The URL without its password: stream URLs often carry the camera's credentials."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
