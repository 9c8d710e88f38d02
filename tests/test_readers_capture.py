"""Frame sources and synthetic videos, through real OpenCV file and network I/O."""

from __future__ import annotations

import functools
import http.server
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from gateway.broker_setup import free_port
from readers.capture import Backoff, SourceError, open_source
from readers.decoding import Decoder
from readers.scenes import VideoWriteError, badge_video, empty_frame, write_video

SMALL = (160, 120)


def small_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [empty_frame(SMALL, rng) for _ in range(count)]


def test_badge_video_reads_back_with_every_badge_decodable(tmp_path: Path, badge_tokens: list[str]) -> None:
    texts = badge_tokens
    path = tmp_path / "badges.avi"
    schedule = badge_video(texts, path, np.random.default_rng(7))
    assert len(schedule) == 3 * 6 + 4 * 4
    assert schedule[:4] == [None] * 4
    assert schedule[4:10] == [texts[0]] * 6
    decoder = Decoder()
    with open_source(str(path)) as source:
        frames = list(source)
    assert len(frames) == len(schedule)
    assert all(frame.shape == (720, 1280, 3) for frame in frames)
    decoded = [decoder.decode(frame) for frame in frames]
    assert decoded == [[] if text is None else [text] for text in schedule]


@pytest.mark.parametrize("suffix", [".avi", ".mkv", ".mp4"])
def test_written_video_ends_at_its_end(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"clip{suffix}"
    assert write_video(small_frames(5), path, fps=10) == 5
    source = open_source(str(path))
    with source:
        frames = list(source)
    assert [frame.shape for frame in frames] == [(120, 160, 3)] * 5
    assert list(source) == []  # closed


def test_write_video_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(VideoWriteError, match="unknown video suffix"):
        write_video(small_frames(1), tmp_path / "clip.gif")
    with pytest.raises(
        VideoWriteError, match=r"no-such-folder/clip\.avi: OpenCV could not open a MJPG writer"
    ):
        write_video(small_frames(1), tmp_path / "no-such-folder" / "clip.avi")
    with pytest.raises(VideoWriteError, match="no frames"):
        write_video([], tmp_path / "clip.avi")
    with pytest.raises(VideoWriteError, match="frame 1 is 80x60"):
        write_video([*small_frames(1), np.zeros((60, 80, 3), np.uint8)], tmp_path / "clip.avi")


def test_image_folder_yields_its_images_in_name_order(tmp_path: Path) -> None:
    names = ["10.png", "02.bmp", "01.png", "04.PNG"]
    for value, name in zip((100, 20, 10, 40), names, strict=True):
        cv2.imwrite(str(tmp_path / name), np.full((12, 16, 3), value, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    with open_source(str(tmp_path)) as source:
        values = [int(frame[0, 0, 0]) for frame in source]
    assert values == [10, 20, 40, 100]


def test_unreadable_image_in_a_folder_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "b.png").write_text("a text file with an image's name")
    with caplog.at_level(logging.WARNING, logger="readers.capture"), open_source(str(tmp_path)) as source:
        assert len(list(source)) == 1
    assert "cannot read image" in caplog.text
    assert "b.png" in caplog.text


def test_a_single_image_is_a_one_frame_source(tmp_path: Path) -> None:
    image = tmp_path / "badge.jpg"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    with open_source(str(image)) as source:
        assert [frame.shape for frame in source] == [(8, 8, 3)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda folder: folder / "missing.avi", r"missing\.avi: no such file or folder"),
        (lambda folder: folder, "no .png/.jpg/.jpeg/.bmp images in it"),
        (
            lambda folder: _write(folder / "notes.txt", b"shift notes, not a video"),
            "not a video OpenCV can read",
        ),
        (lambda folder: _write(folder / "broken.avi", bytes(range(256)) * 20), "not a video OpenCV can read"),
    ],
    ids=["missing-file", "empty-folder", "text-file", "garbage-avi"],
)
def test_unopenable_source_says_why(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    spec = make(tmp_path)
    with pytest.raises(SourceError, match=message) as error:
        open_source(str(spec))
    assert str(spec) in str(error.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_absent_camera_index_says_so() -> None:
    if Path("/dev/video57").exists():
        pytest.skip("this machine has a /dev/video57")
    with pytest.raises(SourceError, match="camera index 57 not present"):
        open_source("57")


def test_unreachable_stream_says_so_without_its_password() -> None:
    url = f"rtsp://guard:s3cret@127.0.0.1:{free_port()}/turnstile-4"
    with pytest.raises(SourceError, match="stream unreachable") as error:
        open_source(url)
    assert "s3cret" not in str(error.value)
    assert "rtsp://guard:***@127.0.0.1" in str(error.value)


def test_unsupported_scheme_is_refused() -> None:
    with pytest.raises(SourceError, match="only rtsp, http, https streams"):
        open_source("udp://239.0.0.1:5000")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[http.server.ThreadingHTTPServer]:
    """An HTTP server on localhost serving tmp_path: a stream that the test can cut."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=tmp_path)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_dropped_stream_is_reopened_with_backoff_then_given_up(
    tmp_path: Path, http_server: http.server.ThreadingHTTPServer
) -> None:
    write_video(small_frames(5), tmp_path / "live.avi")
    url = f"http://127.0.0.1:{http_server.server_address[1]}/live.avi"
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # the second drop: the camera goes away for good
            http_server.shutdown()
            http_server.server_close()

    frames = 0
    source = open_source(url, backoff=Backoff(attempts=2, first_delay=0.5), sleep=sleep)
    with source, pytest.raises(SourceError, match=r"dropped and did not come back after 2 attempts"):
        for _ in source:
            frames += 1
    assert frames == 10  # the clip twice: once, then again after the first reconnection
    assert waits == [0.5, 0.5, 1.0]


def test_backoff_doubles_up_to_its_cap() -> None:
    assert Backoff(attempts=6, first_delay=0.5, max_delay=4.0).delays() == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
