"""ID photos: a JPEG or PNG upload in, a cropped, shrunk, metadata-free JPEG out; anything else is refused.

The crop keeps the ID-photo ratio 7:9 (35 x 45 mm), centred across and a little high (faces sit in the upper
part of a portrait). Decoding happens in Pillow with its decompression-bomb guard; nothing of the upload but
its pixels is kept (no EXIF: no location, no camera serial).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

RATIO = 7 / 9  # width / height of an ID photo
OUT_SIZE = (350, 450)  # pixels: 250 dpi on the card's 35 x 45 mm box is more than the printers resolve
MIN_SIZE = (150, 190)  # below this a face is not recognisable on the card
MAX_BYTES = 8 * 1024 * 1024
MAX_PIXELS = 50_000_000
ACCEPTED = {"JPEG": "image/jpeg", "PNG": "image/png"}
JPEG_QUALITY = 85


class PhotoError(ValueError):
    """The upload is not a usable ID photo; the message says why, for the desk clerk."""


def prepare(data: bytes) -> bytes:
    """Validate an uploaded photo and return the card's JPEG (350 x 450 pixels)."""
    if not data:
        raise PhotoError("the file is empty")
    if len(data) > MAX_BYTES:
        raise PhotoError(f"the file is {len(data) / 1e6:.1f} MB; a photo may be at most {MAX_BYTES // 2**20} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            kind = image.format
            if kind not in ACCEPTED:
                raise PhotoError(f"this is a {kind or 'unknown'} image; only JPEG or PNG photos are accepted")
            if image.width * image.height > MAX_PIXELS:
                raise PhotoError(f"the image is {image.width} x {image.height} pixels, too large to be a photo")
            image.load()
    except PhotoError:
        raise
    except UnidentifiedImageError:
        raise PhotoError("this file is not an image; only JPEG or PNG photos are accepted") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoError("the image is too large to be a photo") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PhotoError(f"the image is damaged or cut short ({exc})") from None
    upright: Image.Image = ImageOps.exif_transpose(image)  # phones store portraits sideways and say so in EXIF
    if upright.width < MIN_SIZE[0] or upright.height < MIN_SIZE[1]:
        raise PhotoError(
            f"the photo is {upright.width} x {upright.height} pixels; at least {MIN_SIZE[0]} x {MIN_SIZE[1]} are needed"
        )
    cropped = ImageOps.fit(_flatten(upright), OUT_SIZE, Image.Resampling.LANCZOS, centering=(0.5, 0.4))
    out = io.BytesIO()
    cropped.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def _flatten(image: Image.Image) -> Image.Image:
    """RGB on white: a transparent PNG would otherwise print with a black background."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
