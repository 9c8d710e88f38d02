"""Synthetic turnstile scenes: a printed QR badge held up in front of a cluttered background.

Used by tests, the demo and benchmarks, so every scene is reproducible from a seeded `np.random.Generator`.
Sizes are (width, height), as OpenCV takes them; frames are BGR uint8 arrays of shape (height, width, 3).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import qrcode
from qrcode.constants import ERROR_CORRECT_M

log = logging.getLogger(__name__)

Size = tuple[int, int]  # (width, height)

# Codecs that opencv-python-headless's FFMPEG backend both writes and reads back on this machine.
# avc1/H.264 is absent: its only encoder here needs a hardware device.
FOURCC_BY_SUFFIX = {".avi": "MJPG", ".mkv": "FFV1", ".mp4": "mp4v"}

_CARD_LABEL = "EVENT STAFF"


class VideoWriteError(RuntimeError):
    """A video file could not be written."""


def render_badge_frame(
    text: str,
    size: Size = (1280, 720),
    *,
    rng: np.random.Generator,
    perspective: float = 0.15,
    noise_sigma: float = 6.0,
    blur: float = 0,
    qr_fraction: float = 0.35,
) -> np.ndarray:
    """A camera frame with a badge showing `text` as a QR code.

    `qr_fraction` is the side of the code, quiet zone included, relative to the frame's shorter side;
    `perspective` is how far each card corner may move, relative to the card's size; `blur` is the sigma
    in pixels of an out-of-focus Gaussian blur (0: sharp); `noise_sigma` is the sensor noise in grey levels.
    """
    background = _background(size, rng)
    return _finish(
        _place_card(background, badge_card(text, size, qr_fraction), rng, perspective), rng, noise_sigma, blur
    )


def empty_frame(
    size: Size, rng: np.random.Generator, *, noise_sigma: float = 6.0, blur: float = 0
) -> np.ndarray:
    """The same kind of scene as `render_badge_frame`, with no badge in view."""
    return _finish(_background(size, rng), rng, noise_sigma, blur)


def badge_card(text: str, size: Size, qr_fraction: float = 0.35) -> np.ndarray:
    """The printed badge, upright, sized for a frame of `size`: a QR code (level M, 4-module quiet zone)
    above a label."""
    if not 0 < qr_fraction <= 0.7:
        raise ValueError(f"qr_fraction must be in (0, 0.7], got {qr_fraction}")
    modules = _qr_modules(text)
    side = round(qr_fraction * min(size))
    if side < 2 * len(modules):
        raise ValueError(f"a {len(modules)}-module code needs at least {2 * len(modules)} px, got {side}")
    # Sharp print, seen by a camera: modules drawn 8 px wide, then area-averaged down to size, so a module
    # edge that falls inside a pixel shows grey instead of making that module a pixel wider.
    crisp = np.where(modules, 0, 255).astype(np.uint8).repeat(8, axis=0).repeat(8, axis=1)
    code = cv2.resize(crisp, (side, side), interpolation=cv2.INTER_AREA)
    margin = side // 12
    label_height = side // 6
    card = np.full((side + 2 * margin + label_height, side + 2 * margin, 3), 246, np.uint8)
    card[margin : margin + side, margin : margin + side] = code[..., None]
    scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_SIMPLEX, label_height // 2, 2)
    (label_width, _), _ = cv2.getTextSize(_CARD_LABEL, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    origin = ((card.shape[1] - label_width) // 2, margin + side + (label_height * 3) // 4)
    cv2.putText(card, _CARD_LABEL, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (90, 40, 20), 2, cv2.LINE_AA)
    return card


@functools.lru_cache(maxsize=64)
def _qr_modules(text: str) -> np.ndarray:
    """The modules, quiet zone included (True: dark). Cached: `qrcode` takes ~25 ms per badge token."""
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=4, box_size=1)
    qr.add_data(text.encode("utf-8"))
    qr.make(fit=True)
    modules = np.array(qr.get_matrix(), dtype=bool)
    modules.flags.writeable = False
    return modules


def write_video(frames: Iterable[np.ndarray], path: Path, fps: int = 10) -> int:
    """Write BGR frames to `path` (.avi: MJPG, .mkv: lossless FFV1, .mp4: MPEG-4) and return their count."""
    path = Path(path)
    fourcc = FOURCC_BY_SUFFIX.get(path.suffix.lower())
    if fourcc is None:
        raise VideoWriteError(
            f"cannot write {path}: unknown video suffix, use one of {', '.join(FOURCC_BY_SUFFIX)}"
        )
    writer: cv2.VideoWriter | None = None
    size: Size = (0, 0)
    count = 0
    try:
        for frame in frames:
            height, width = frame.shape[:2]
            if writer is None:
                # The writer needs the frame size, so it opens on the first frame.
                writer = cv2.VideoWriter(
                    str(path), cv2.CAP_FFMPEG, cv2.VideoWriter.fourcc(*fourcc), fps, (width, height)
                )
                if not writer.isOpened():
                    raise VideoWriteError(
                        f"cannot write {path}: OpenCV could not open a {fourcc} writer "
                        "(folder missing or not writable, or codec not built in)"
                    )
                size = (width, height)
            elif (width, height) != size:
                raise VideoWriteError(f"cannot write {path}: frame {count} is {width}x{height}, not {size}")
            writer.write(np.ascontiguousarray(frame))
            count += 1
    finally:
        if writer is not None:
            writer.release()
    if count == 0:
        raise VideoWriteError(f"cannot write {path}: no frames")
    log.debug("wrote %d frames to %s", count, path)
    return count


def badge_video(
    texts: Sequence[str],
    path: Path,
    rng: np.random.Generator,
    *,
    frames_per_badge: int = 6,
    gap_frames: int = 4,
    size: Size = (1280, 720),
    fps: int = 10,
) -> list[str | None]:
    """Write a video in which each badge is shown in turn, with empty frames before, between and after.

    One fixed background (the camera does not move); the badge's pose and the noise change every frame,
    as `render_badge_frame` with its defaults draws them.
    Returns what each frame shows: the badge's text, or None for an empty frame.
    """
    background = _background(size, rng)
    schedule: list[str | None] = [None] * gap_frames
    for text in texts:
        schedule += [text] * frames_per_badge + [None] * gap_frames
    cards = {text: badge_card(text, size) for text in set(texts)}

    def frames() -> Iterable[np.ndarray]:
        for text in schedule:
            scene = background if text is None else _place_card(background, cards[text], rng, 0.15)
            yield _finish(scene, rng, 6.0, 0)

    write_video(frames(), path, fps)
    return schedule


def _background(size: Size, rng: np.random.Generator) -> np.ndarray:
    """A gradient wall with random shapes, lines and signage text: clutter for the detector to ignore."""
    width, height = size
    start, end = rng.uniform(40, 220, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    across = np.arange(width, dtype=np.float32) * np.float32(np.cos(angle))
    down = np.arange(height, dtype=np.float32) * np.float32(np.sin(angle))
    ramp = across[None, :] + down[:, None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    image: np.ndarray = (start + ramp[..., None] * (end - start)).astype(np.uint8)
    for _ in range(int(rng.integers(12, 25))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        extent = int(rng.integers(min(size) // 30, min(size) // 4))
        kind = rng.integers(0, 5)
        if kind == 0:
            cv2.rectangle(image, (x, y), (x + extent, y + int(rng.integers(5, extent + 6))), colour, -1)
        elif kind == 1:
            cv2.circle(image, (x, y), extent // 2, colour, int(rng.choice([-1, 2, 5])), cv2.LINE_AA)
        elif kind == 2:
            end_point = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(image, (x, y), end_point, colour, int(rng.integers(1, 8)), cv2.LINE_AA)
        elif kind == 3:
            word = "".join(rng.choice(list("ABCDEFGHJKLMNPRSTUVWXYZ0123456789"), int(rng.integers(3, 9))))
            cv2.putText(image, word, (x, y), cv2.FONT_HERSHEY_SIMPLEX, extent / 60, colour, 2, cv2.LINE_AA)
        else:
            # A chequered patch (a grille, a patterned shirt): square-ish edges that are not a code.
            cell = int(rng.integers(3, 12))
            for row in range(0, extent, cell):
                for col in range((row // cell) % 2 * cell, extent, 2 * cell):
                    cv2.rectangle(
                        image, (x + col, y + row), (x + col + cell - 1, y + row + cell - 1), colour, -1
                    )
    return image


def _place_card(
    background: np.ndarray, card: np.ndarray, rng: np.random.Generator, perspective: float
) -> np.ndarray:
    """Paste the card at a random place, its corners moved by up to `perspective` times its size."""
    height, width = background.shape[:2]
    card_h, card_w = card.shape[:2]
    corners = np.array([[0, 0], [card_w, 0], [card_w, card_h], [0, card_h]], dtype=np.float32)
    moved = corners + rng.uniform(-perspective, perspective, (4, 2)) * [card_w, card_h]
    moved -= moved.min(axis=0)
    span = moved.max(axis=0)
    if span[0] >= width or span[1] >= height:
        raise ValueError(f"a {card_w}x{card_h} card does not fit a {width}x{height} frame")
    moved += [rng.uniform(0, width - span[0]), rng.uniform(0, height - span[1])]
    transform = cv2.getPerspectiveTransform(corners, moved.astype(np.float32))
    warped = cv2.warpPerspective(card, transform, (width, height), flags=cv2.INTER_LINEAR)
    # A warped mask blends the card's edges smoothly, as a real camera would see them.
    mask = cv2.warpPerspective(np.ones((card_h, card_w), np.float32), transform, (width, height))[..., None]
    # Uneven light on the card: a guard's hand, a lamp to one side.
    shade = rng.uniform(0.7, 1.0) + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, width, dtype=np.float32)
    lit = warped * np.clip(shade, 0.4, 1.0)[None, :, None]
    scene: np.ndarray = (background * (1 - mask) + lit * mask).astype(np.uint8)
    return scene


def _finish(image: np.ndarray, rng: np.random.Generator, noise_sigma: float, blur: float) -> np.ndarray:
    """Camera effects: defocus first, then sensor noise."""
    if blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), blur)
    if noise_sigma > 0:
        noisy = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_sigma)
        image = np.clip(noisy, 0, 255).astype(np.uint8)
    return image
