"""Printed cards: the PDF is rendered to an image (poppler), the QR decoded from the pixels (zxing-cpp), and the
token verified against the web side's JWKS with joserfc, a JWT library independent of the gateway's PyJWT."""

from __future__ import annotations

import datetime as dt
import io
import re
import warnings

import numpy as np
import pytest
import zxingcpp
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import KeySet
from PIL import Image

from gateway import badges, cards, photos
from gateway import holders as registry
from gateway.db.engine import make_engine, session_factory
from gateway.holders import Actor, AssignmentDraft, HolderDraft, ShiftDraft
from gateway.web import create_app

NOW = dt.datetime(2026, 7, 26, 12, 0, tzinfo=dt.UTC)
DPI = 300
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def portrait() -> bytes:
    image = Image.new("RGB", (600, 800), (190, 210, 230))
    image.paste((60, 60, 80), (150, 120, 450, 500))
    out = io.BytesIO()
    image.save(out, "PNG")
    return photos.prepare(out.getvalue())


def issue_many(instance, site, count: int, zones=("STADIUM-PERIMETER", "STADIUM-CONCOURSE")) -> list:  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    faces = []
    with sessions() as s, s.begin():
        org = registry.create_organisation(
            s, "BPOL", "Bundespolizei, Direktion Bundesbereitschaftspolizei", "police", "DE"
        )
        for i in range(count):
            h = registry.register(s, site, org, HolderDraft(f"Müller-{i:02d}", "Anna-Katharina", "DE", "police"), NOW)
            h.photo, h.photo_type = portrait(), "image/jpeg"
            a = registry.set_assignment(
                s,
                site,
                instance.settings.issuer,
                h,
                AssignmentDraft(
                    zones, dt.date(2026, 7, 20), dt.date(2026, 8, 11), (ShiftDraft(("mon",), "06:00", "14:00"),)
                ),
                NOW,
            )
            b = badges.issue_from_assignment(s, site, instance.keyring, instance.settings.issuer, h, NOW, Actor("t"))
            faces.append(cards.face_for(site, b, a))
    return faces


def decode(png: bytes) -> list[zxingcpp.Barcode]:
    image = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    return [b for b in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]


def verify_with_joserfc(token: str, jwks: dict) -> jwt.Token:  # type: ignore[type-arg]
    with warnings.catch_warnings():
        # joserfc warns that RFC 9864 prefers the fully specified "Ed25519" name over "EdDSA"; same algorithm.
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["EdDSA"])


def test_card_is_id1_size_and_its_qr_verifies_against_the_jwks(instance, site, tmp_path) -> None:  # type: ignore[no-untyped-def]
    [face] = issue_many(instance, site, 1)
    pdf = cards.card_pdf([face])
    media_box = re.search(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf)
    assert media_box is not None
    width_mm, height_mm = (float(v) / 72 * 25.4 for v in media_box.groups())
    assert (round(width_mm, 1), round(height_mm, 1)) == (85.6, 54.0)

    png = cards.page_png(pdf, dpi=DPI)
    (tmp_path / "card.png").write_bytes(png)
    [code] = decode(png)
    assert code.text == face.token
    assert int(code.extra["Version"]) <= 12 and code.extra["ECLevel"] == "M"

    jwks = create_app(instance.folder).test_client().get("/.well-known/jwks.json").get_json()
    token = verify_with_joserfc(code.text, jwks)
    assert token.header == {"alg": "EdDSA", "kid": instance.keyring.badge_kid, "typ": "badge"}
    assert token.claims["iss"] == "PAR24" and token.claims["jti"] == face.badge_id
    assert token.claims["zn"] == "C P"  # badge codes of the concourse and the perimeter
    assert set(token.claims) == {"iss", "jti", "sub", "zn", "nbf", "exp"}  # nothing personal


def test_qr_keeps_its_quiet_zone_clear(instance, site) -> None:  # type: ignore[no-untyped-def]
    [face] = issue_many(instance, site, 1)
    png = cards.page_png(cards.card_pdf([face]), dpi=DPI)
    [code] = decode(png)
    gray = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    corners = [(p.x, p.y) for p in (code.position.top_left, code.position.top_right, code.position.bottom_left)]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    modules = int(code.extra["Version"]) * 4 + 17
    module_px = (max(xs) - min(xs)) / (modules - 1)
    margin = int(4 * module_px)
    left, top, right, bottom = min(xs), min(ys), max(xs) + module_px, max(ys) + module_px
    ring = np.concatenate(
        [
            gray[int(top) - margin : int(top) - 2, int(left) : int(right)].ravel(),
            gray[int(bottom) + 2 : int(bottom) + margin, int(left) : int(right)].ravel(),
            gray[int(top) : int(bottom), int(left) - margin : int(left) - 2].ravel(),
            gray[int(top) : int(bottom), int(right) + 2 : int(right) + margin].ravel(),
        ]
    )
    assert ring.min() > 200, "something is printed in the QR code's quiet zone"


def test_a4_sheets_hold_ten_cards_a_page_and_every_qr_reads(instance, site) -> None:  # type: ignore[no-untyped-def]
    faces = issue_many(instance, site, 12)
    pdf = cards.sheet_pdf(faces)
    first = decode(cards.page_png(pdf, dpi=DPI, page=1))
    second = decode(cards.page_png(pdf, dpi=DPI, page=2))
    assert sorted(c.text for c in first + second) == sorted(f.token for f in faces)
    assert (len(first), len(second)) == (10, 2)


def test_a_badge_for_every_zone_of_the_sample_site_still_fits(instance, site) -> None:  # type: ignore[no-untyped-def]
    zones = tuple(z for z in site.zones if z not in ("STADIUM-FIELD", "STADIUM-OPS", "AIRPORT-AIRSIDE"))
    [face] = issue_many(instance, site, 1, zones=zones)
    [code] = decode(cards.page_png(cards.card_pdf([face]), dpi=DPI))
    assert code.text == face.token and int(code.extra["Version"]) <= 12
