"""The turnstile scene generator (each camera effect does what it says, within readable bounds) and the
texture search that points the decoder's fallbacks at likely codes."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import zxingcpp

from readers import scenes
from readers.decoding import Decoder, to_gray
from readers.regions import CELL, MIN_CELLS, Region, textured_regions
from readers.scenes import (
    BLUR_LIMIT_PX,
    Conditions,
    empty_scene,
    render_scene,
    turnstile_conditions,
)

SIZE = (1280, 720)


def code_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """Where zxing-cpp sees the code (x0, y0, x1, y1)."""
    found = zxingcpp.read_barcodes(gray, formats=zxingcpp.BarcodeFormat.QRCode)
    assert found, "no code located"
    p = found[0].position
    xs = [p.top_left.x, p.top_right.x, p.bottom_right.x, p.bottom_left.x]
    ys = [p.top_left.y, p.top_right.y, p.bottom_right.y, p.bottom_left.y]
    return min(xs), min(ys), max(xs), max(ys)


# --- the generator ------------------------------------------------------------------------------------------------


def test_a_scene_is_reproducible_from_its_seed(badge_tokens: list[str]) -> None:
    conditions = turnstile_conditions(np.random.default_rng(3))
    first = render_scene(badge_tokens[0], SIZE, conditions, np.random.default_rng(3))
    again = render_scene(badge_tokens[0], SIZE, conditions, np.random.default_rng(3))
    other = render_scene(badge_tokens[0], SIZE, conditions, np.random.default_rng(4))
    assert first.shape == (720, 1280, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_drawn_conditions_stay_in_their_documented_ranges() -> None:
    rng = np.random.default_rng(0)
    for size in (SIZE, (1920, 1080)):
        scale = min(size) / 720
        drawn = [turnstile_conditions(rng, size) for _ in range(400)]
        for c in drawn:
            assert 0.3 <= c.qr_fraction <= 0.5
            assert abs(c.tilt_deg) <= 25 and c.perspective <= 0.15
            assert np.hypot(c.defocus, c.motion_px / 12**0.5) <= BLUR_LIMIT_PX * scale + 1e-9
            assert c.motion_px <= 4 * scale
            assert c.cover <= 0.07 and c.glare <= 1.0 and c.light >= 0.12
        # Every effect shows up, alone or combined, and plain presentations too.
        for name, on in [
            ("motion", lambda c: c.motion_px > 0),
            ("defocus", lambda c: c.defocus > 0),
            ("glare", lambda c: c.glare > 0),
            ("low light", lambda c: c.light < 1),
            ("cover", lambda c: c.cover > 0),
            ("jpeg", lambda c: c.jpeg_quality > 0),
        ]:
            share = sum(map(on, drawn)) / len(drawn)
            assert 0.15 < share < 0.6, name


@pytest.mark.parametrize(
    ("conditions", "at_least"),
    [
        # Blur at the limit on the smallest code: the hard tail, where the bench's few misses are.
        (Conditions(qr_fraction=0.3, motion_px=4.0, motion_deg=30), 6),
        (Conditions(qr_fraction=0.3, defocus=BLUR_LIMIT_PX), 6),
        (Conditions(qr_fraction=0.3, motion_px=3.0, motion_deg=30), 12),
        (Conditions(qr_fraction=0.3, defocus=1.0), 12),
        # What error correction must recover, or what a good decoder must see through: always read.
        (Conditions(qr_fraction=0.3, glare=1.0, glare_size=0.12), 12),
        (Conditions(qr_fraction=0.3, light=0.12), 12),
        (Conditions(qr_fraction=0.3, cover=0.07), 12),
        (Conditions(qr_fraction=0.3, jpeg_quality=60), 12),
        (Conditions(qr_fraction=0.5, tilt_deg=25, perspective=0.15), 12),
    ],
    ids=["motion-4px", "defocus-limit", "motion-3px", "defocus-1px", "glare", "low-light", "thumb", "jpeg", "tilt"],
)
def test_each_effect_at_the_top_of_its_range_leaves_badges_readable(
    conditions: Conditions, at_least: int, badge_tokens: list[str]
) -> None:
    decoder = Decoder()
    read = sum(
        decoder.decode(render_scene(badge_tokens[seed % 3], SIZE, conditions, np.random.default_rng(seed)))
        == [badge_tokens[seed % 3]]
        for seed in range(12)
    )
    assert read >= at_least  # of 12


def test_the_thumb_covers_its_share_of_the_code_and_no_finder_pattern(badge_tokens: list[str]) -> None:
    card, code = scenes._card(badge_tokens[0], SIZE, 0.4)
    quiet = code.pitch * scenes._QUIET
    x0, y0, side = round(code.x + quiet), round(code.y + quiet), round(code.side - 2 * quiet)
    for seed in range(20):
        thumb = scenes._thumb_mask(card.shape[:2], code, 0.07, np.random.default_rng(seed))
        covered = thumb[y0 : y0 + side, x0 : x0 + side].sum() / side**2
        assert 0.02 < covered <= 0.07 + 1e-6, seed  # short of 7% only when a finder pattern is in the way
        for fx0, fy0, fx1, fy1 in code.finders():
            assert thumb[int(fy0) : int(fy1), int(fx0) : int(fx1)].max() == 0, seed


def test_the_reflection_washes_out_a_patch_off_the_finder_patterns(badge_tokens: list[str]) -> None:
    card, code = scenes._card(badge_tokens[0], SIZE, 0.4)
    for seed in range(20):
        spot = scenes._glare_map(card.shape[:2], code, 0.12, np.random.default_rng(seed))
        assert spot.max() > 0.95  # its centre is on the code
        core = spot > 0.6
        for fx0, fy0, fx1, fy1 in code.finders():
            assert not core[int(fy0) : int(fy1), int(fx0) : int(fx1)].any(), seed


def test_low_light_is_darker_and_grainier() -> None:
    wall = np.full((200, 200, 3), 160, np.float32)
    day = scenes._shoot(wall.copy(), None, Conditions(noise_sigma=6), np.random.default_rng(0))
    dusk = scenes._shoot(wall.copy(), None, Conditions(noise_sigma=6, light=0.15), np.random.default_rng(0))
    assert day.mean() == pytest.approx(160, abs=1)
    assert dusk.mean() == pytest.approx(160 * 0.15 * scenes.MAX_GAIN, abs=1)  # the gain makes up what it can
    assert dusk.std() > 1.4 * day.std()


def test_a_motion_streak_has_its_length_and_direction() -> None:
    horizontal = scenes._streak(5.0, 0.0)
    assert horizontal.sum() == pytest.approx(1.0)
    rows, cols = np.nonzero(horizontal > 0.02)
    assert cols.max() - cols.min() + 1 >= 5 and rows.max() - rows.min() + 1 <= 2
    vertical = scenes._streak(5.0, 90.0)
    rows, cols = np.nonzero(vertical > 0.02)
    assert rows.max() - rows.min() + 1 >= 5 and cols.max() - cols.min() + 1 <= 2


def test_jpeg_compression_changes_the_frame_but_not_its_size(badge_tokens: list[str]) -> None:
    raw = render_scene(badge_tokens[0], SIZE, Conditions(), np.random.default_rng(1))
    compressed = render_scene(badge_tokens[0], SIZE, Conditions(jpeg_quality=60), np.random.default_rng(1))
    assert compressed.shape == raw.shape
    assert 0 < np.abs(compressed.astype(int) - raw.astype(int)).mean() < 8


def test_a_card_that_cannot_fit_the_frame_is_refused(badge_tokens: list[str]) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        render_scene(badge_tokens[0], SIZE, Conditions(qr_fraction=0.7, tilt_deg=45), np.random.default_rng(0))


# --- the texture search ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_the_texture_search_finds_the_badge(seed: int, badge_tokens: list[str]) -> None:
    rng = np.random.default_rng(seed)
    conditions = dataclasses.replace(turnstile_conditions(rng), motion_px=0, defocus=0, light=1, glare=0, cover=0)
    gray = to_gray(render_scene(badge_tokens[seed % 3], SIZE, conditions, rng))
    x0, y0, x1, y1 = code_box(gray)
    centre = Region((x0 + x1) // 2, (y0 + y1) // 2, (x0 + x1) // 2 + 1, (y0 + y1) // 2 + 1)
    found = textured_regions(gray)
    assert any(region.overlaps(centre) for region in found)
    biggest = found[0]
    assert biggest.area >= 0.3 * (x1 - x0) * (y1 - y0)  # the code's region, not a scrap of it


def test_the_texture_search_finds_nothing_in_smooth_or_tiny_images() -> None:
    ramp = np.tile(np.linspace(0, 255, 640, dtype=np.float32), (480, 1)).astype(np.uint8)
    assert textured_regions(ramp) == []
    assert textured_regions(np.zeros((480, 640), np.uint8)) == []
    noise = np.random.default_rng(0).normal(128, 4, (480, 640)).clip(0, 255).astype(np.uint8)
    assert textured_regions(noise) == []  # sensor noise is no texture
    assert textured_regions(np.zeros((CELL * MIN_CELLS - 1, 640), np.uint8)) == []


def test_the_texture_search_ignores_lines_and_returns_at_most_its_limit() -> None:
    image = np.full((720, 1280), 200, np.uint8)
    for y in range(100, 600, 40):
        cv2.line(image, (50, y), (1200, y), 0, 3)  # ruled lines: edges in one direction only
    assert textured_regions(image) == []
    rng = np.random.default_rng(1)
    for x in (40, 360, 680, 1000):
        image[400:600, x : x + 200] = np.where(rng.random((25, 25)) < 0.5, 0, 255).repeat(8, 0).repeat(8, 1)
    assert len(textured_regions(image, limit=3)) == 3
    assert len(textured_regions(image, limit=10)) == 4


def test_region_growth_is_clipped_to_the_frame() -> None:
    region = Region(10, 20, 110, 220)
    assert region.grown(0.2, 16, 1280, 720) == Region(0, 0, 146, 276)
    assert Region(1200, 650, 1280, 720).grown(0.5, 10, 1280, 720) == Region(1150, 605, 1280, 720)
    assert region.overlaps(Region(100, 200, 300, 400)) and not region.overlaps(Region(110, 20, 200, 220))


def test_an_idle_turnstile_camera_reads_nothing() -> None:
    decoder = Decoder()
    for seed in range(10):
        rng = np.random.default_rng(seed)
        assert decoder.decode(empty_scene(SIZE, turnstile_conditions(rng), rng)) == []
