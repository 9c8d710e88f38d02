"""QR decoding: two engines (zxing-cpp, pyzbar/ZBar) and a default pipeline built on them.

Every function takes a grayscale uint8 image and returns the distinct texts of the QR codes found in it,
sorted, so that the same image always gives the same answer whatever order an engine reports codes in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, get_args

import cv2
import numpy as np
import zxingcpp
from pyzbar import pyzbar
from pyzbar.pyzbar import ZBarSymbol

from readers.regions import Region, textured_regions

log = logging.getLogger(__name__)

EngineName = Literal["auto", "zxing", "pyzbar"]
ENGINES: tuple[EngineName, ...] = get_args(EngineName)

# QR Code Models 1 and 2: what badges are printed as. Micro QR and rMQR, which zxing-cpp's "QR Code" family
# also covers, cannot hold a badge token and would only add ways to misread clutter.
_ZXING_QR = zxingcpp.BarcodeFormats(
    (zxingcpp.BarcodeFormat.QRCodeModel1, zxingcpp.BarcodeFormat.QRCodeModel2)
)


def to_gray(frame: np.ndarray) -> np.ndarray:
    """A contiguous uint8 grayscale image from a BGR, BGRA or grayscale frame (no copy when already so)."""
    if frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[..., 0]
    if frame.ndim == 2:
        return np.ascontiguousarray(frame)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"expected a grayscale, BGR or BGRA image, got shape {frame.shape}")


def read_zxing(gray: np.ndarray) -> list[str]:
    """QR codes found by zxing-cpp with its default search (rotations, downscales, inverted codes)."""
    return _distinct(result.text for result in _zxing_results(gray, invert=True) if result.valid)


def read_pyzbar(gray: np.ndarray) -> list[str]:
    """QR codes found by ZBar."""
    symbols = pyzbar.decode(gray, symbols=[ZBarSymbol.QRCODE])
    # ZBar hands back UTF-8 bytes. A badge that is not valid UTF-8 still reaches the gateway, which denies
    # it as malformed: a visible denial beats a silent no-read.
    return _distinct(symbol.data.decode("utf-8", errors="replace") for symbol in symbols)


@dataclass
class StepStats:
    """What one pipeline step cost and earned, for the bench: how often it ran, how often it read a code
    that the steps before it had missed, and the time it took."""

    runs: int = 0
    reads: int = 0
    seconds: float = 0.0


Prepare = Callable[[np.ndarray], np.ndarray]


def upscale(factor: float) -> Prepare:
    """Enlarge: zxing-cpp locates finder patterns of 3 px modules and less far better at 1.5-2x size."""

    def prepare(crop: np.ndarray) -> np.ndarray:
        return cv2.resize(crop, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)

    return prepare


def sharpen(sigma: float = 2.0, amount: float = 2.0) -> Prepare:
    """Unsharp mask: restores module edges that defocus or motion smeared."""

    def prepare(crop: np.ndarray) -> np.ndarray:
        return cv2.addWeighted(crop, 1 + amount, cv2.GaussianBlur(crop, (0, 0), sigma), -amount, 0)

    return prepare


def chain(*steps: Prepare) -> Prepare:
    def prepare(crop: np.ndarray) -> np.ndarray:
        for step in steps:
            crop = step(crop)
        return crop

    return prepare


def invert(crop: np.ndarray) -> np.ndarray:
    """Light modules on dark: a badge shown on a phone in dark mode."""
    return cv2.bitwise_not(crop)


RegionStep = tuple[str, Prepare]

# What the pipeline tries, in order, on a region of the frame where zxing-cpp read nothing. Chosen and ordered
# by what each read on the bench's scenes per millisecond; `python bench/decode.py` prints the figures.
REGION_STEPS: tuple[RegionStep, ...] = (
    ("upscale 2x", upscale(2.0)),
    ("upscale 1.5x + sharpen", chain(upscale(1.5), sharpen(1.5, 2.0))),
    ("invert", invert),
)


class Pipeline:
    """zxing-cpp on the whole frame; when that reads nothing, zxing-cpp again on a few regions likely to hold
    a code, each enlarged or sharpened (REGION_STEPS) until one reads.

    The regions are the codes zxing-cpp located but could not read, then textured patches
    (`readers.regions`). A frame with a badge zxing-cpp reads at once, the common case, costs one zxing-cpp
    pass; an idle frame costs that pass and the texture search, plus the steps on any clutter it finds.
    The fallbacks stop at the first region that reads: a turnstile shows one badge at a time.
    """

    def __init__(
        self,
        region_steps: tuple[RegionStep, ...] = REGION_STEPS,
        max_regions: int = 3,
        stats: dict[str, StepStats] | None = None,
    ) -> None:
        self.region_steps = region_steps
        self.max_regions = max_regions
        self.stats = stats  # filled in when given: the bench's accounting

    def __call__(self, gray: np.ndarray) -> list[str]:
        started = time.perf_counter()
        results = self.first_pass(gray)
        texts = _distinct(result.text for result in results if result.valid)
        self._account("zxing", started, bool(texts))
        if texts:
            return texts
        started = time.perf_counter()
        regions = self.regions(gray, results)
        self._account("find regions", started, False)
        for box in regions:
            crop = np.ascontiguousarray(gray[box.y0 : box.y1, box.x0 : box.x1])
            for name, prepare in self.region_steps:
                started = time.perf_counter()
                texts = read_region(prepare(crop))
                self._account(name, started, bool(texts))
                if texts:
                    log.debug("read by %s in %s", name, box)
                    return texts
        return []

    @staticmethod
    def first_pass(gray: np.ndarray) -> list[zxingcpp.Barcode]:
        """zxing-cpp on the whole frame, dark codes only: every QR code located, read or not (`valid`).

        Badges are printed dark on light; zxing-cpp's search for inverted codes would make an idle frame
        cost 20% more, for a code no badge has (inversion is a region step instead).
        """
        return _zxing_results(gray, invert=False)

    def regions(self, gray: np.ndarray, results: list[zxingcpp.Barcode]) -> list[Region]:
        """Where the fallbacks look, in frame pixels: the codes located but not read, then textured patches,
        each grown to take in the quiet zone and the texture map's coarse edges."""
        height, width = gray.shape
        located = [_box(result.position) for result in results if not result.valid]
        textured = [
            region
            for region in textured_regions(gray, self.max_regions)
            if not any(region.overlaps(box) for box in located)
        ]
        return [region.grown(0.2, 16, width, height) for region in [*located, *textured][: self.max_regions]]

    def _account(self, name: str, started: float, read: bool) -> None:
        if self.stats is not None:
            step = self.stats.setdefault(name, StepStats())
            step.runs += 1
            step.reads += read
            step.seconds += time.perf_counter() - started


def read_pipeline(gray: np.ndarray) -> list[str]:
    """The default pipeline (see `Pipeline`)."""
    return _DEFAULT_PIPELINE(gray)


_DEFAULT_PIPELINE = Pipeline()

_READERS: dict[str, Callable[[np.ndarray], list[str]]] = {
    "auto": read_pipeline,
    "zxing": read_zxing,
    "pyzbar": read_pyzbar,
}


class Decoder:
    """Reads the QR codes in camera frames with one engine: "auto" (the pipeline), "zxing" or "pyzbar"."""

    def __init__(self, engine: EngineName = "auto") -> None:
        if engine not in _READERS:
            raise ValueError(f"unknown decoding engine {engine!r}: choose one of {', '.join(ENGINES)}")
        self.engine = engine
        self._read = _READERS[engine]

    def decode(self, gray: np.ndarray) -> list[str]:
        """The distinct QR texts in a grayscale frame, sorted; a BGR frame is converted first."""
        return self._read(to_gray(gray))

    def __repr__(self) -> str:
        return f"Decoder(engine={self.engine!r})"


def read_region(image: np.ndarray) -> list[str]:
    """The texts zxing-cpp reads in a prepared region (dark codes only: inversion is a step of its own)."""
    return _distinct(result.text for result in _zxing_results(image, invert=False) if result.valid)


def _zxing_results(gray: np.ndarray, *, invert: bool) -> list[zxingcpp.Barcode]:
    """Every QR code zxing-cpp located, read or not (`valid`): the unread ones guide the fallbacks."""
    return zxingcpp.read_barcodes(
        gray,
        formats=_ZXING_QR,
        try_invert=invert,
        text_mode=zxingcpp.TextMode.Plain,  # the payload as encoded, no human-readable decoration
        return_errors=True,
    )


def _box(position: zxingcpp.Position) -> Region:
    corners = (position.top_left, position.top_right, position.bottom_right, position.bottom_left)
    xs, ys = [point.x for point in corners], [point.y for point in corners]
    return Region(min(xs), min(ys), max(xs) + 1, max(ys) + 1)


def _distinct(texts: Iterable[str]) -> list[str]:
    return sorted(set(texts))
