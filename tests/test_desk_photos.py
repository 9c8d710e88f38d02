"""ID photos: JPEG and PNG are cropped to 7:9 and shrunk, without their metadata; anything else is refused."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from gateway.photos import OUT_SIZE, PhotoError, prepare


def encoded(fmt: str, size: tuple[int, int] = (800, 600), mode: str = "RGB", **save: object) -> bytes:
    image = Image.new(mode, size, "white" if mode != "RGBA" else (0, 0, 0, 0))
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(encoded("JPEG"), id="jpeg-landscape"),
        pytest.param(encoded("PNG", (300, 1200)), id="png-tall"),
        pytest.param(encoded("PNG", (400, 500), "RGBA"), id="png-transparent"),
        pytest.param(encoded("PNG", (400, 500), "L"), id="png-grey"),
    ],
)
def test_photo_becomes_a_small_id_ratio_jpeg(data: bytes) -> None:
    out = Image.open(io.BytesIO(prepare(data)))
    assert (out.format, out.size, out.mode) == ("JPEG", OUT_SIZE, "RGB")
    assert OUT_SIZE[0] / OUT_SIZE[1] == pytest.approx(7 / 9)


def test_metadata_is_dropped_and_orientation_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees to show
    exif[0x010F] = "PhoneMaker"
    data = encoded("JPEG", (900, 600), exif=exif.tobytes())
    out = Image.open(io.BytesIO(prepare(data)))
    assert out.size == OUT_SIZE and not out.getexif()


def test_transparent_png_prints_on_white_not_black() -> None:
    out = Image.open(io.BytesIO(prepare(encoded("PNG", (400, 500), "RGBA"))))
    assert out.getpixel((5, 5)) == pytest.approx((255, 255, 255), abs=3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "the file is empty", id="empty"),
        pytest.param(encoded("GIF"), "this is a GIF image; only JPEG or PNG", id="gif"),
        pytest.param(encoded("BMP"), "this is a BMP image; only JPEG or PNG", id="bmp"),
        pytest.param(b"%PDF-1.4 not a photo", "not an image", id="pdf"),
        pytest.param(encoded("JPEG")[:200], "damaged or cut short", id="truncated"),
        pytest.param(encoded("PNG", (100, 120)), "at least 150 x 190 are needed", id="too-small"),
        pytest.param(b"\xff" * (9 * 1024 * 1024), "at most 8 MB", id="too-large"),
    ],
)
def test_anything_else_is_refused_with_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(PhotoError, match=message):
        prepare(data)
