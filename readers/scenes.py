"""Synthetic turnstile scenes: a printed QR badge held up in front of a cluttered background.

Used by tests, the demo and benchmarks, so every scene is reproducible from a seeded `np.random.Generator`.
Sizes are (width, height), as OpenCV takes them; frames are BGR uint8 arrays of shape (height, width, 3).

`Conditions` describes one presentation: how close, tilted and off-axis the badge is, whether it moves, the
focus, a lamp's reflection on the laminate, the light, a thumb over the code, the camera's noise and JPEG
compression. `render_scene` draws it; `turnstile_conditions` draws the conditions at random within ranges a
decoder can be asked to cope with (see its docstring and docs/performance.md, "Decoding").
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Conditions:
    """How a badge is shown to the camera and how the camera sees it. The defaults: a steady, sharp, well-lit
    badge, slightly off-axis. Pixel lengths are in pixels of the frame being rendered."""

    qr_fraction: float = 0.35  # side of the code, quiet zone included, over the frame's shorter side
    perspective: float = 0.15  # how far each card corner may move, relative to the card's size
    tilt_deg: float = 0.0  # in-plane rotation of the card
    motion_px: float = 0.0  # length of the streak the moving card draws during the exposure
    motion_deg: float = 0.0  # direction of that streak
    defocus: float = 0.0  # sigma of an out-of-focus Gaussian blur
    glare: float = 0.0  # peak brightness a lamp's reflection adds on the laminated card (1: full white)
    glare_size: float = 0.1  # sigma of that reflection, relative to the side of the code
    light: float = 1.0  # light reaching the sensor relative to daylight; the camera's gain makes up at most 4x
    noise_sigma: float = 6.0  # sensor noise in grey levels at daylight exposure
    cover: float = 0.0  # part of the code's area under the guard's thumb (finder patterns stay visible)
    jpeg_quality: int = 0  # 0: raw frames; else the quality of the camera's JPEG (MJPEG) compression


BLUR_LIMIT_PX = 1.2  # at 1280x720: the combined blur, as a Gaussian sigma, of the worst frame drawn
MAX_GAIN = 4.0  # a camera's auto gain in the dark, before it lengthens the exposure instead


def render_scene(text: str, size: Size, conditions: Conditions, rng: np.random.Generator) -> np.ndarray:
    """A camera frame (BGR) of a badge showing `text`, held up as `conditions` say, over a cluttered wall."""
    background = _background(size, rng)
    scene, glare = _badge_layer(background, text, conditions, rng)
    return _shoot(scene, glare, conditions, rng)


def empty_scene(size: Size, conditions: Conditions, rng: np.random.Generator) -> np.ndarray:
    """The same camera looking at the same kind of wall with no badge in view (only camera effects apply)."""
    return _shoot(_background(size, rng).astype(np.float32), None, conditions, rng)


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
    """A camera frame with a badge showing `text` as a QR code: `render_scene` with only these conditions.

    `blur` is the sigma in pixels of an out-of-focus Gaussian blur (0: sharp).
    """
    conditions = Conditions(
        qr_fraction=qr_fraction, perspective=perspective, noise_sigma=noise_sigma, defocus=blur
    )
    return render_scene(text, size, conditions, rng)


def empty_frame(
    size: Size, rng: np.random.Generator, *, noise_sigma: float = 6.0, blur: float = 0
) -> np.ndarray:
    """The same kind of scene as `render_badge_frame`, with no badge in view."""
    return empty_scene(size, Conditions(noise_sigma=noise_sigma, defocus=blur), rng)


def turnstile_conditions(rng: np.random.Generator, size: Size = (1280, 720)) -> Conditions:
    """One badge presentation at a turnstile, drawn at random: what the bench and the tests score.

    Every presentation is off-axis and tilted; each harder effect comes with its own probability, so many
    frames combine two or three. The ranges stay where error correction level M can still recover the code
    and a frame still shows it: a thumb hides at most 7% of it, a reflection's washed-out core is a small
    patch, nothing hides a finder pattern, a motion streak is at most 4 px (1.35 modules of the smallest
    version-12 code), and defocus and motion together blur by at most BLUR_LIMIT_PX as a Gaussian sigma
    (0.4 module). Pixel lengths scale with the frame: a 1920x1080 camera with the same lens sees everything
    1.5 times larger than a 1280x720 one.
    """
    scale = min(size) / 720
    chance = rng.uniform(0, 1, 6)
    motion = float(rng.uniform(1, 4) * scale) if chance[0] < 0.4 else 0.0
    defocus = float(rng.uniform(0.5, 1.3) * scale) if chance[1] < 0.3 else 0.0
    # A streak of length L blurs like a Gaussian of sigma L / sqrt(12); blurs add in quadrature.
    blur = float(np.hypot(defocus, motion / 12**0.5))
    if blur > BLUR_LIMIT_PX * scale:
        motion, defocus = (value * BLUR_LIMIT_PX * scale / blur for value in (motion, defocus))
    return Conditions(
        qr_fraction=float(rng.uniform(0.3, 0.5)),
        perspective=float(rng.uniform(0.03, 0.15)),
        tilt_deg=float(rng.uniform(-25, 25)),
        motion_px=motion,
        motion_deg=float(rng.uniform(0, 180)),
        defocus=defocus,
        glare=float(rng.uniform(0.4, 1.0)) if chance[2] < 0.3 else 0.0,
        glare_size=float(rng.uniform(0.05, 0.12)),
        light=float(rng.uniform(0.12, 0.35)) if chance[3] < 0.3 else 1.0,
        noise_sigma=float(rng.uniform(2, 6)),
        cover=float(rng.uniform(0.02, 0.07)) if chance[4] < 0.3 else 0.0,
        jpeg_quality=int(rng.integers(60, 91)) if chance[5] < 0.5 else 0,
    )


@dataclass(frozen=True)
class _CodeBox:
    """Where the code sits on a card, in card pixels: its top-left corner, side, and modules per side
    (quiet zone included)."""

    x: float
    y: float
    side: float
    modules: int

    @property
    def pitch(self) -> float:
        return self.side / self.modules

    def finders(self) -> list[tuple[float, float, float, float]]:
        """The three finder patterns with their separators (8x8 modules), as (x0, y0, x1, y1)."""
        near, far = self.pitch * _QUIET, self.pitch * (self.modules - _QUIET - 8)
        extent = self.pitch * 8
        return [
            (self.x + dx, self.y + dy, self.x + dx + extent, self.y + dy + extent)
            for dx, dy in ((near, near), (far, near), (near, far))
        ]


_QUIET = 4  # quiet zone, in modules


def badge_card(text: str, size: Size, qr_fraction: float = 0.35) -> np.ndarray:
    """The printed badge, upright, sized for a frame of `size`: a QR code (level M, 4-module quiet zone)
    above a label."""
    return _card(text, size, qr_fraction)[0]


def _card(text: str, size: Size, qr_fraction: float) -> tuple[np.ndarray, _CodeBox]:
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
    return card, _CodeBox(margin, margin, side, len(modules))


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
    conditions = Conditions()

    def frames() -> Iterable[np.ndarray]:
        for text in schedule:
            if text is None:
                yield _shoot(background.astype(np.float32), None, conditions, rng)
            else:
                yield _shoot(*_badge_layer(background, text, conditions, rng), conditions, rng)

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
    channels = [cv2.convertScaleAbs(ramp, alpha=float(e - s), beta=float(s)) for s, e in zip(start, end, strict=True)]
    image: np.ndarray = cv2.merge(channels)
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


Glare = tuple[np.ndarray, int, int]  # a lamp's reflection (0..1) over part of the frame, and its top-left corner


def _badge_layer(
    background: np.ndarray, text: str, conditions: Conditions, rng: np.random.Generator
) -> tuple[np.ndarray, Glare | None]:
    """The wall with the badge held in front of it, as light reaching the lens (float32, not yet exposed),
    and the reflection on the card, kept apart because it does not dim with the scene's light.

    The thumb and the reflection are drawn on the card, so they follow its pose and its motion.
    """
    card, code = _card(text, (background.shape[1], background.shape[0]), conditions.qr_fraction)
    layers = [card.astype(np.float32), np.ones(card.shape[:2], np.float32)]
    if conditions.cover > 0:
        thumb = _thumb_mask(card.shape[:2], code, conditions.cover, rng)
        layers[0] = _draw_thumb(layers[0], thumb, rng)
    if conditions.glare > 0:
        shine = _glare_map(card.shape[:2], code, conditions.glare_size, rng) * np.float32(conditions.glare)
        if conditions.cover > 0:
            shine *= 1 - thumb  # skin does not shine like the laminate
        layers.append(shine)
    return _place(background, layers, conditions, rng)


def _place(
    background: np.ndarray, layers: list[np.ndarray], conditions: Conditions, rng: np.random.Generator
) -> tuple[np.ndarray, Glare | None]:
    """Warp the card (layers: BGR, coverage mask, optional glare) to a random pose and blend it in."""
    height, width = background.shape[:2]
    card_h, card_w = layers[0].shape[:2]
    corners = np.array([[0, 0], [card_w, 0], [card_w, card_h], [0, card_h]], dtype=np.float32)
    moved = corners.copy()
    if conditions.tilt_deg:
        turn = np.deg2rad(conditions.tilt_deg)
        rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]], np.float32)
        moved = (moved - [card_w / 2, card_h / 2]) @ rotation.T
    moved += rng.uniform(-conditions.perspective, conditions.perspective, (4, 2)) * [card_w, card_h]
    moved -= moved.min(axis=0)
    span = moved.max(axis=0)
    if span[0] >= width or span[1] >= height:
        raise ValueError(f"a {card_w}x{card_h} card does not fit a {width}x{height} frame")
    moved += [rng.uniform(0, width - span[0]), rng.uniform(0, height - span[1])]
    # Work in the card's bounding box (plus room for the motion streak), not the whole frame.
    pad = int(np.ceil(conditions.motion_px)) + 2
    x0, y0 = (max(int(v) - pad, 0) for v in moved.min(axis=0))
    x1 = min(int(np.ceil(moved[:, 0].max())) + pad, width)
    y1 = min(int(np.ceil(moved[:, 1].max())) + pad, height)
    transform = cv2.getPerspectiveTransform(corners, (moved - [x0, y0]).astype(np.float32))
    box = (x1 - x0, y1 - y0)
    warped = [cv2.warpPerspective(layer, transform, box, flags=cv2.INTER_LINEAR) for layer in layers]
    if conditions.motion_px > 0:
        kernel = _streak(conditions.motion_px, conditions.motion_deg)
        warped = [cv2.filter2D(layer, -1, kernel, borderType=cv2.BORDER_CONSTANT) for layer in warped]
    painted, mask = warped[0], warped[1][..., None]
    # Uneven light on the card: a guard's hand, a lamp to one side.
    shade = rng.uniform(0.7, 1.0) + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, width, dtype=np.float32)
    painted *= np.clip(shade[x0:x1], 0.4, 1.0)[None, :, None]
    scene = background.astype(np.float32)
    region = scene[y0:y1, x0:x1]
    region[...] = region * (1 - mask) + painted * mask
    glare = (warped[2], x0, y0) if len(warped) > 2 else None
    return scene, glare


def _streak(length: float, angle_deg: float) -> np.ndarray:
    """A normalised line kernel: the blur of a card moving `length` px in a straight line during exposure."""
    side = int(np.ceil(length)) | 1
    kernel = np.zeros((side * 4, side * 4), np.float32)  # drawn 4x larger, then area-averaged: sub-pixel ends
    centre = side * 2 - 0.5
    step = np.array([np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))]) * length * 2
    start = np.round((centre - step) * 16).astype(int)
    end = np.round((centre + step) * 16).astype(int)
    cv2.line(kernel, tuple(int(v) for v in start), tuple(int(v) for v in end), 1.0, 4, cv2.LINE_AA, shift=4)
    small = cv2.resize(kernel, (side, side), interpolation=cv2.INTER_AREA)
    result: np.ndarray = small / small.sum()
    return result


def _thumb_mask(shape: tuple[int, int], code: _CodeBox, cover: float, rng: np.random.Generator) -> np.ndarray:
    """Coverage (0..1) of a thumb reaching in from the card's right or bottom edge, over `cover` of the code.

    It stops short of the finder patterns: a thumb that hides one is moved by the guard, not decoded.
    """
    symbol = (code.x + code.pitch * _QUIET, code.y + code.pitch * _QUIET, code.side - 2 * code.pitch * _QUIET)
    half_width = symbol[2] * rng.uniform(0.16, 0.22)
    clear = code.pitch * (_QUIET + 8) + half_width  # keep the thumb's sides off the finder patterns
    along = rng.uniform(clear, code.side - half_width * 0.5)  # where on the edge, from the code's corner
    angle = rng.uniform(-20, 20)
    from_right = bool(rng.integers(0, 2))
    finders = np.zeros(shape, bool)
    for fx0, fy0, fx1, fy1 in code.finders():
        finders[int(fy0) : int(np.ceil(fy1)), int(fx0) : int(np.ceil(fx1))] = True
    in_symbol = np.zeros(shape, np.float32)
    sx0, sy0, side = (round(v) for v in symbol)
    in_symbol[sy0 : sy0 + side, sx0 : sx0 + side] = 1

    def draw(depth: float) -> np.ndarray:
        """The thumb with its tip `depth` px inside the symbol's edge."""
        mask = np.zeros(shape, np.uint8)
        length = half_width * 2.4
        if from_right:
            centre = (symbol[0] + symbol[2] - depth + length, code.y + along)
            direction = 180 + angle
        else:
            centre = (code.x + along, symbol[1] + symbol[2] - depth + length)
            direction = 270 + angle
        # cv2.ellipse's angle turns the first axis; the thumb's long axis points along `direction`.
        cv2.ellipse(
            mask,
            (round(centre[0] * 16), round(centre[1] * 16)),
            (round(length * 16), round(half_width * 16)),
            direction,
            0,
            360,
            255,
            -1,
            cv2.LINE_AA,
            shift=4,
        )
        return mask.astype(np.float32) / 255

    target = cover * side * side
    low, high = 0.0, float(side)
    for _ in range(20):  # bisect the depth that covers `target`, without touching a finder pattern
        depth = (low + high) / 2
        mask = draw(depth)
        if (mask * in_symbol).sum() > target or mask[finders].any():
            high = depth
        else:
            low = depth
    return draw(low) if low > 0 else np.zeros(shape, np.float32)


_SKIN_TONES = ((60, 85, 120), (95, 130, 180), (130, 165, 215), (160, 190, 230))  # BGR, from dark to light


def _draw_thumb(card: np.ndarray, thumb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint the thumb over the card: a skin tone, darker towards its rounded edges."""
    tone = np.array(_SKIN_TONES[int(rng.integers(0, len(_SKIN_TONES)))], np.float32) * rng.uniform(0.85, 1.1)
    # Distance from the thumb's outline gives its roundness: edges in shadow, the middle lit.
    inside = cv2.distanceTransform((thumb > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
    roundness = np.clip(inside / max(float(inside.max()), 1.0), 0, 1) ** 0.5
    skin = tone * (0.55 + 0.45 * roundness)[..., None]
    painted: np.ndarray = card * (1 - thumb[..., None]) + skin * thumb[..., None]
    return painted


def _glare_map(shape: tuple[int, int], code: _CodeBox, size: float, rng: np.random.Generator) -> np.ndarray:
    """A lamp's reflection on the laminate (0..1): an elongated Gaussian spot whose washed-out core stays
    off the finder patterns."""
    height, width = shape
    sigma_long = size * code.side
    sigma_short = sigma_long * rng.uniform(0.4, 1.0)
    angle = rng.uniform(0, np.pi)
    core = sigma_long  # where the spot still adds about 60% of its peak
    symbol = code.pitch * _QUIET
    for _ in range(50):
        cx = code.x + rng.uniform(symbol, code.side - symbol)
        cy = code.y + rng.uniform(symbol, code.side - symbol)
        if not any(
            fx0 - core < cx < fx1 + core and fy0 - core < cy < fy1 + core for fx0, fy0, fx1, fy1 in code.finders()
        ):
            break
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
    v = (ys - cy) * np.cos(angle) - (xs - cx) * np.sin(angle)
    spot: np.ndarray = np.exp(-(u**2 / (2 * sigma_long**2) + v**2 / (2 * sigma_short**2))).astype(np.float32)
    return spot


def _shoot(
    scene: np.ndarray, glare: Glare | None, conditions: Conditions, rng: np.random.Generator
) -> np.ndarray:
    """What the camera makes of the light in front of it (float32 BGR, changed in place): focus, exposure
    and gain, the lamp's reflection, sensor noise, JPEG."""
    if conditions.defocus > 0:
        cv2.GaussianBlur(scene, (0, 0), conditions.defocus, dst=scene)
    gain = min(1 / conditions.light, MAX_GAIN)
    exposure = conditions.light * gain
    if exposure != 1:
        scene *= np.float32(exposure)
    if glare is not None:
        shine, x0, y0 = glare
        if conditions.defocus > 0:
            shine = cv2.GaussianBlur(shine, (0, 0), conditions.defocus)
        region = scene[y0 : y0 + shine.shape[0], x0 : x0 + shine.shape[1]]
        region += (shine * np.float32(255))[..., None]
    # Shot noise: the gain that brightens a dim scene amplifies its noise too.
    sigma = conditions.noise_sigma * gain * conditions.light**0.5
    if sigma > 0:
        noise = np.empty_like(scene)
        # OpenCV's generator is three times faster than numpy's here; seeding it from `rng` keeps the frame
        # reproducible.
        cv2.setRNGSeed(int(rng.integers(2**31)))
        cv2.randn(noise, np.zeros(3), np.full(3, sigma))
        scene += noise
    frame: np.ndarray = np.clip(scene, 0, 255, out=scene).astype(np.uint8)
    if conditions.jpeg_quality:
        ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, conditions.jpeg_quality])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG frame")
        frame = np.asarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR))
    return frame
