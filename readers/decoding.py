"""QR decoding: two engines (zxing-cpp, pyzbar/ZBar) and a default pipeline built on them.

Every function takes a grayscale uint8 image and returns the distinct texts of the QR codes found in it,
sorted, so that the same image always gives the same answer whatever order an engine reports codes in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Literal, get_args

import cv2
import numpy as np
import zxingcpp
from pyzbar import pyzbar
from pyzbar.pyzbar import ZBarSymbol

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
    texts, _ = _zxing(gray)
    return texts


def read_pyzbar(gray: np.ndarray) -> list[str]:
    """QR codes found by ZBar."""
    symbols = pyzbar.decode(gray, symbols=[ZBarSymbol.QRCODE])
    # ZBar hands back UTF-8 bytes. A badge that is not valid UTF-8 still reaches the gateway, which denies
    # it as malformed: a visible denial beats a silent no-read.
    return _distinct(symbol.data.decode("utf-8", errors="replace") for symbol in symbols)


def read_pipeline(gray: np.ndarray) -> list[str]:
    """zxing-cpp first; only when it located a QR code it could not read, a sharpened retry and ZBar.

    An empty frame, the common case at a turnstile, costs a single zxing-cpp pass. The fallbacks only add
    codes, so this finds everything `read_zxing` finds.
    """
    texts, missed = _zxing(gray)
    if not missed:
        return texts
    log.debug("%d QR code(s) located but not read; trying the fallbacks", missed)
    # An unsharp mask restores module edges of a slightly out-of-focus badge (measured on synthetic scenes:
    # helps from blur sigma ~1 px upwards; it never lost a code zxing-cpp read unsharpened).
    sharpened, _ = _zxing(_sharpen(gray))
    recovered = set(sharpened) - set(texts)
    if not recovered:
        # ZBar last: ~25 ms on a 1280x720 frame, and so far it never read a code the passes above missed.
        recovered = set(read_pyzbar(gray))
    return _distinct([*texts, *recovered])


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


def _zxing(gray: np.ndarray) -> tuple[list[str], int]:
    """The texts zxing-cpp read, and how many QR codes it located but could not read."""
    results = zxingcpp.read_barcodes(
        gray,
        formats=_ZXING_QR,
        text_mode=zxingcpp.TextMode.Plain,  # the payload as encoded, no human-readable decoration
        return_errors=True,  # the located-but-unreadable codes gate the pipeline's fallbacks
    )
    texts = _distinct(result.text for result in results if result.valid)
    return texts, sum(not result.valid for result in results)


def _sharpen(gray: np.ndarray) -> np.ndarray:
    blurred = cv2.GaussianBlur(gray, (0, 0), 2.0)
    return cv2.addWeighted(gray, 3.0, blurred, -2.0, 0)


def _distinct(texts: Iterable[str]) -> list[str]:
    return sorted(set(texts))
