"""Badge cards as PDF: one ID-1 card (85.6 x 54 mm) per page for card printers, or A4 sheets of ten for batches.

The face: a band in the role's colour with the site and the role, the photo, the name, organisation and
country, the validity dates, the QR code with its 4-module quiet zone, and the zone codes in large type along
the bottom so a steward reads them at arm's length. The QR is drawn as vector modules (no resampling blur).
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zxingcpp
from reportlab.lib.colors import Color, HexColor, white
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader, simpleSplit
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from gateway.db.models import Assignment, Badge
from gateway.holders import format_shifts, local_days
from gateway.site import Site

CARD_W, CARD_H = 85.6 * mm, 54 * mm  # ISO/IEC 7810 ID-1
QUIET_MODULES = 4  # ISO/IEC 18004 quiet zone
SHEET_COLUMNS, SHEET_ROWS = 2, 5
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")  # Debian's fonts-dejavu-core: Latin, Greek, Cyrillic names
INK = HexColor("#15202b")
MUTED = HexColor("#4a5866")
ROLE_COLOURS = {
    "police": "#1f4e9c",
    "gendarme": "#0b2a5b",
    "soldier": "#3f6b35",
    "private_guard": "#d9661f",
    "dog_handler": "#6b3fa0",
    "bomb_disposal": "#b42318",
    "anti_drone": "#0f7c80",
    "spotter": "#8a6d1d",
    "supervisor": "#111111",
}
OTHER_COLOURS = ["#5b6b7a", "#7c3a5e", "#2f6f4f", "#8c4b16"]


@dataclass(frozen=True)
class CardFace:
    """What one card shows; no database objects, so a card can be drawn anywhere."""

    site_name: str
    family_name: str
    given_name: str
    organisation: str
    country: str
    role: str  # a code from zones.yaml's roles
    zones: tuple[str, ...]  # badge codes, as printed
    first_day: dt.date
    last_day: dt.date
    badge_id: str
    token: str
    photo: bytes | None = None  # the desk's JPEG
    shifts: str = ""


def face_for(site: Site, badge: Badge, assignment: Assignment | None = None) -> CardFace:
    holder = badge.holder
    first, last = local_days(site, badge.not_before, badge.expires_at)
    return CardFace(
        site_name=site.name,
        family_name=holder.family_name,
        given_name=holder.given_name,
        organisation=holder.organisation.name,
        country=holder.country,
        role=holder.role,
        zones=tuple(site.zones[z].on_badge if z in site.zones else z for z in _site_order(site, badge.zone_codes)),
        first_day=first,
        last_day=last,
        badge_id=badge.id,
        token=badge.token,
        photo=holder.photo,
        shifts=format_shifts(assignment.shifts) if assignment is not None else "",
    )


def _site_order(site: Site, zones: Iterable[str]) -> list[str]:
    order = {code: i for i, code in enumerate(site.zones)}
    return sorted(zones, key=lambda z: (order.get(z, len(order)), z))


def qr_modules(text: str) -> np.ndarray:
    """The QR code's modules, quiet zone excluded (True: dark), at error correction M."""
    code = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    return np.asarray(code.to_image(scale=1, add_quiet_zones=False)) < 128


def qr_version(text: str) -> int:
    return int(qr_modules(text).shape[0] - 17) // 4


def card_pdf(faces: Sequence[CardFace]) -> bytes:
    """One card per page, page = card size: for card printers."""
    out = io.BytesIO()
    canvas = Canvas(out, pagesize=(CARD_W, CARD_H), pageCompression=1)
    _document_info(canvas, faces)
    for face in faces:
        _draw_card(canvas, face)
        canvas.showPage()
    canvas.save()
    return out.getvalue()


def sheet_pdf(faces: Sequence[CardFace]) -> bytes:
    """A4 portrait sheets of ten cards (2 x 5) with crop marks: for batches on an office printer."""
    out = io.BytesIO()
    canvas = Canvas(out, pagesize=A4, pageCompression=1)
    _document_info(canvas, faces)
    page_w, page_h = A4
    gap_x = (page_w - SHEET_COLUMNS * CARD_W) / (SHEET_COLUMNS + 1)
    gap_y = (page_h - SHEET_ROWS * CARD_H) / (SHEET_ROWS + 1)
    per_page = SHEET_COLUMNS * SHEET_ROWS
    for start in range(0, len(faces), per_page):
        for i, face in enumerate(faces[start : start + per_page]):
            col, row = i % SHEET_COLUMNS, i // SHEET_COLUMNS
            x = gap_x + col * (CARD_W + gap_x)
            y = page_h - (row + 1) * (CARD_H + gap_y)
            canvas.saveState()
            canvas.translate(x, y)
            _crop_marks(canvas)
            _draw_card(canvas, face)
            canvas.restoreState()
        canvas.showPage()
    canvas.save()
    return out.getvalue()


def page_png(pdf: bytes, dpi: int = 200, page: int = 1) -> bytes:
    """One page of a PDF as PNG, rendered by poppler's pdftoppm (the card preview, and the tests' eyes)."""
    with tempfile.TemporaryDirectory(prefix="card-") as folder:
        out = Path(folder) / "page"
        subprocess.run(
            ["pdftoppm", "-png", "-r", str(dpi), "-f", str(page), "-l", str(page), "-singlefile", "-", str(out)],
            input=pdf,
            capture_output=True,
            check=True,
            timeout=60,
        )
        return out.with_suffix(".png").read_bytes()


def _document_info(canvas: Canvas, faces: Sequence[CardFace]) -> None:
    canvas.setTitle(f"Badges ({len(faces)})" if len(faces) != 1 else f"Badge {faces[0].badge_id}")
    canvas.setCreator("accessgw badge desk")
    canvas.setAuthor("")


# --- drawing -----------------------------------------------------------------------------------------


@functools.cache
def _fonts() -> tuple[str, str, str]:
    """(regular, bold, condensed bold), registered once; Helvetica when DejaVu is not installed."""
    files = {
        "DejaVu": "DejaVuSans.ttf",
        "DejaVu-Bold": "DejaVuSans-Bold.ttf",
        "DejaVu-CondBold": "DejaVuSansCondensed-Bold.ttf",
    }
    if not all((FONT_DIR / f).is_file() for f in files.values()):
        return "Helvetica", "Helvetica-Bold", "Helvetica-Bold"
    for name, file in files.items():
        pdfmetrics.registerFont(TTFont(name, str(FONT_DIR / file)))
    return "DejaVu", "DejaVu-Bold", "DejaVu-CondBold"


def role_colour(role: str) -> Color:
    if role in ROLE_COLOURS:
        return HexColor(ROLE_COLOURS[role])
    return HexColor(OTHER_COLOURS[sum(role.encode()) % len(OTHER_COLOURS)])


def _fit(canvas: Canvas, text: str, font: str, size: float, width: float, smallest: float) -> tuple[str, float]:
    """Shrink the type down to `smallest` to fit `width`, then cut the text with an ellipsis."""
    while size > smallest and canvas.stringWidth(text, font, size) > width:
        size -= 0.25
    if canvas.stringWidth(text, font, size) <= width:
        return text, size
    while text and canvas.stringWidth(text + "…", font, size) > width:
        text = text[:-1]
    return text.rstrip() + "…", size


def _draw_card(canvas: Canvas, face: CardFace) -> None:
    regular, bold, condensed = _fonts()
    colour = role_colour(face.role)
    band_h = 9 * mm

    # card outline (a hairline: the cutter's guide on sheets, invisible on a card printer's edge)
    canvas.setStrokeColor(HexColor("#c9d1d9"))
    canvas.setLineWidth(0.3)
    canvas.roundRect(0, 0, CARD_W, CARD_H, 3 * mm, stroke=1, fill=0)

    # top band: site and role, in the role's colour
    canvas.setFillColor(colour)
    path = canvas.beginPath()
    r = 3 * mm
    path.moveTo(0, CARD_H - band_h)
    path.lineTo(0, CARD_H - r)
    path.arcTo(0, CARD_H - 2 * r, 2 * r, CARD_H, startAng=180, extent=-90)
    path.lineTo(CARD_W - r, CARD_H)
    path.arcTo(CARD_W - 2 * r, CARD_H - 2 * r, CARD_W, CARD_H, startAng=90, extent=-90)
    path.lineTo(CARD_W, CARD_H - band_h)
    path.close()
    canvas.drawPath(path, fill=1, stroke=0)
    canvas.setFillColor(white)
    site_text, site_size = _fit(canvas, face.site_name.upper(), bold, 6.2, 46 * mm, 4.5)
    canvas.setFont(bold, site_size)
    canvas.drawString(3 * mm, CARD_H - 4.4 * mm, site_text)
    subtitle = "SECURITY ACCREDITATION · PERSONAL"
    canvas.setFont(regular, 4.6)
    canvas.drawString(3 * mm, CARD_H - 7.3 * mm, subtitle)
    left_w = max(canvas.stringWidth(site_text, bold, site_size), canvas.stringWidth(subtitle, regular, 4.6))
    role_text, role_size = _fit(canvas, face.role.replace("_", " ").upper(), bold, 10, CARD_W - 9 * mm - left_w, 5.5)
    canvas.setFont(bold, role_size)
    canvas.drawRightString(CARD_W - 3 * mm, CARD_H - 4.5 * mm - role_size * 0.36, role_text)

    # photo, 7:9, framed
    photo_w, photo_h = 19.6 * mm, 25.2 * mm
    photo_x, photo_y = 3 * mm, CARD_H - band_h - 1.8 * mm - photo_h
    if face.photo:
        canvas.drawImage(ImageReader(io.BytesIO(face.photo)), photo_x, photo_y, photo_w, photo_h)
    else:
        canvas.setFillColor(HexColor("#e6eaee"))
        canvas.rect(photo_x, photo_y, photo_w, photo_h, stroke=0, fill=1)
        canvas.setFillColor(MUTED)
        canvas.setFont(bold, 5)
        canvas.drawCentredString(photo_x + photo_w / 2, photo_y + photo_h / 2, "NO PHOTO")
    canvas.setStrokeColor(colour)
    canvas.setLineWidth(0.6)
    canvas.rect(photo_x, photo_y, photo_w, photo_h, stroke=1, fill=0)

    # QR code, quiet zone included, at the right
    qr_size = 29 * mm
    qr_x, qr_y = CARD_W - 1.6 * mm - qr_size, CARD_H - band_h - 0.6 * mm - qr_size
    _draw_qr(canvas, face.token, qr_x, qr_y, qr_size)

    # identity, between photo and QR (never into the QR's quiet zone)
    text_x = photo_x + photo_w + 2.4 * mm
    text_w = qr_x - text_x - 0.6 * mm
    y = CARD_H - band_h - 5.0 * mm
    family, size = _fit(canvas, face.family_name.upper(), condensed, 11, text_w, 6)
    canvas.setFillColor(INK)
    canvas.setFont(condensed, size)
    canvas.drawString(text_x, y, family)
    y -= 4.0 * mm
    given, size = _fit(canvas, face.given_name, regular, 8.5, text_w, 6)
    canvas.setFont(regular, size)
    canvas.drawString(text_x, y, given)

    y -= 5.0 * mm
    _label(canvas, "COUNTRY · ORGANISATION", text_x, y + 2.3 * mm)
    canvas.setFillColor(INK)
    country = f"{face.country}  "
    canvas.setFont(bold, 6.5)
    canvas.drawString(text_x, y, country)
    indent = canvas.stringWidth(country, bold, 6.5)
    lines = simpleSplit(face.organisation, bold, 6.0, text_w - indent) or [""]
    if len(lines) > 2:
        lines = [lines[0], _fit(canvas, " ".join(lines[1:]), bold, 6.0, text_w - indent, 6.0)[0]]
    canvas.setFont(bold, 6.0)
    for line in lines:
        canvas.drawString(text_x + indent, y, line)
        y -= 2.5 * mm
    y -= 2.6 * mm
    _label(canvas, "VALID", text_x, y + 2.5 * mm)
    validity = f"{face.first_day:%d.%m.%Y} – {face.last_day:%d.%m.%Y}"
    validity, size = _fit(canvas, validity, condensed, 7.5, text_w, 5)
    canvas.setFillColor(INK)
    canvas.setFont(condensed, size)
    canvas.drawString(text_x, y, validity)
    if face.shifts:
        y -= 3.0 * mm
        shifts, size = _fit(canvas, face.shifts, regular, 4.8, text_w, 3.8)
        canvas.setFillColor(MUTED)
        canvas.setFont(regular, size)
        canvas.drawString(text_x, y, shifts)

    # zone codes, large, along the bottom, under everything else
    strip_y = 2.4 * mm
    _draw_zones(canvas, face.zones, colour, bold, 3 * mm, strip_y, CARD_W - 6 * mm)
    canvas.setFillColor(MUTED)
    canvas.setFont(bold, 4.4)
    canvas.drawString(3 * mm, strip_y + 11.4 * mm, "ZONES")
    canvas.setFont(regular, 4.4)
    canvas.drawRightString(qr_x - 0.6 * mm, strip_y + 11.4 * mm, f"No. {face.badge_id}")


def _label(canvas: Canvas, text: str, x: float, y: float) -> None:
    canvas.setFillColor(MUTED)
    canvas.setFont(_fonts()[0], 4.4)
    canvas.drawString(x, y, text)


def _draw_zones(
    canvas: Canvas, zones: Sequence[str], colour: Color, font: str, x: float, y: float, width: float
) -> None:
    """One box per zone code, as large as the strip allows (24 pt: readable at arm's length)."""
    if not zones:
        return
    box_h, gap, pad = 10.5 * mm, 1.2 * mm, 2.4 * mm

    def widths(size: float) -> list[float]:
        return [max(box_h * 0.92, canvas.stringWidth(code, font, size) + pad) for code in zones]

    size = 24.0
    while size > 8 and sum(widths(size)) + gap * (len(zones) - 1) > width:
        size -= 0.5
    boxes = widths(size)
    scale = min(1.0, (width - gap * (len(zones) - 1)) / sum(boxes))
    for code, box_w in zip(zones, boxes, strict=True):
        box_w *= scale
        canvas.setFillColor(colour)
        canvas.roundRect(x, y, box_w, box_h, 1.2 * mm, stroke=0, fill=1)
        canvas.setFillColor(white)
        text, fitted = _fit(canvas, code, font, size, box_w - 0.8 * mm, 6)
        canvas.setFont(font, fitted)
        canvas.drawCentredString(x + box_w / 2, y + (box_h - fitted * 0.72) / 2, text)
        x += box_w + gap


def _draw_qr(canvas: Canvas, token: str, x: float, y: float, size: float) -> None:
    modules = qr_modules(token)
    count = modules.shape[0] + 2 * QUIET_MODULES
    unit = size / count
    canvas.setFillColor(white)
    canvas.rect(x, y, size, size, stroke=0, fill=1)
    canvas.setFillColor(HexColor("#000000"))
    path = canvas.beginPath()
    bleed = unit * 0.02  # rectangles overlap a hair, so no anti-aliasing seam shows between them
    for col, row, width, height in _module_rects(modules):
        left = x + (col + QUIET_MODULES) * unit
        top = y + size - (row + QUIET_MODULES) * unit
        path.rect(left - bleed, top - height * unit - bleed, width * unit + 2 * bleed, height * unit + 2 * bleed)
    canvas.drawPath(path, stroke=0, fill=1)


def _module_rects(modules: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Dark modules as few rectangles (column, row, width, height): runs along a row, stacked while the same
    run repeats on the rows below. A third as many path operations as one square per module."""
    done: list[tuple[int, int, int, int]] = []
    open_runs: dict[tuple[int, int], int] = {}  # (start column, width) -> first row
    for r, row in enumerate(modules):
        padded = np.concatenate(([False], row, [False])).astype(np.int8)
        edges = np.flatnonzero(np.diff(padded))
        runs = {(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)}
        for run in list(open_runs):
            if run not in runs:
                first = open_runs.pop(run)
                done.append((run[0], first, run[1], r - first))
        for run in runs:
            open_runs.setdefault(run, r)
    last = len(modules)
    done.extend((run[0], first, run[1], last - first) for run, first in open_runs.items())
    return done


def _crop_marks(canvas: Canvas) -> None:
    canvas.setStrokeColor(HexColor("#7a8896"))
    canvas.setLineWidth(0.25)
    m, off = 3 * mm, 1 * mm
    for cx, cy, dx, dy in ((0, 0, -1, -1), (CARD_W, 0, 1, -1), (0, CARD_H, -1, 1), (CARD_W, CARD_H, 1, 1)):
        canvas.line(cx + dx * off, cy, cx + dx * (off + m), cy)
        canvas.line(cx, cy + dy * off, cx, cy + dy * (off + m))
