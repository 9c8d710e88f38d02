"""Where in a frame a QR code may be, found cheaply from texture alone, for the decoder's fallbacks.

A QR code is a patch dense with sharp edges in both directions. The frame is halved (which also halves the
sensor noise), the mean horizontal and vertical differences are taken per cell of 16x16 frame pixels, and
cells where both are high are grouped into regions. That costs about 0.5 ms on a 1280x720 frame, so an idle
camera can afford it on every frame; it finds blurred or small codes that the decoder could not locate, and
some clutter (text, grilles), which the fallbacks then try in vain.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CELL = 16  # frame pixels per side of a texture cell
EDGE_LEVEL = 14  # mean grey-level step between neighbours (half scale) above which a cell counts as textured
MIN_CELLS = 4  # smallest region side, in cells: 64 px, below what a badge code at a turnstile measures
_CLOSE = np.ones((3, 3), np.uint8)


@dataclass(frozen=True)
class Region:
    """A box in frame pixels, x1 and y1 exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    def grown(self, fraction: float, pixels: int, width: int, height: int) -> Region:
        """Larger on every side by `fraction` of its size plus `pixels`, clipped to the frame."""
        dx = int((self.x1 - self.x0) * fraction) + pixels
        dy = int((self.y1 - self.y0) * fraction) + pixels
        return Region(max(self.x0 - dx, 0), max(self.y0 - dy, 0), min(self.x1 + dx, width), min(self.y1 + dy, height))

    def overlaps(self, other: Region) -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1


def textured_regions(gray: np.ndarray, limit: int = 3) -> list[Region]:
    """Up to `limit` squarish regions dense with edges in both directions, largest first."""
    height, width = gray.shape
    cells_x, cells_y = width // CELL, height // CELL
    if cells_x < MIN_CELLS or cells_y < MIN_CELLS:
        return []
    half = cv2.resize(
        gray[: cells_y * CELL, : cells_x * CELL],
        (cells_x * CELL // 2, cells_y * CELL // 2),
        interpolation=cv2.INTER_AREA,
    )
    across = cv2.absdiff(half[:, 1:], half[:, :-1])
    down = cv2.absdiff(half[1:], half[:-1])
    # Per cell: the mean step across and down (the last row or column of differences is one short; padding it
    # by replication keeps every cell the same size).
    across = cv2.copyMakeBorder(across, 0, 0, 0, 1, cv2.BORDER_REPLICATE)
    down = cv2.copyMakeBorder(down, 0, 1, 0, 0, cv2.BORDER_REPLICATE)
    step_across = cv2.resize(across, (cells_x, cells_y), interpolation=cv2.INTER_AREA)
    step_down = cv2.resize(down, (cells_x, cells_y), interpolation=cv2.INTER_AREA)
    textured: np.ndarray = (np.minimum(step_across, step_down) > EDGE_LEVEL).astype(np.uint8)
    textured = cv2.morphologyEx(textured, cv2.MORPH_CLOSE, _CLOSE)  # bridge a washed-out cell or two
    count, _labels, stats, _centres = cv2.connectedComponentsWithStats(textured, connectivity=8)
    found: list[Region] = []
    for x, y, w, h, cells in stats[1:count]:
        if w < MIN_CELLS or h < MIN_CELLS or not 0.4 < w / h < 2.5 or cells < 0.4 * w * h:
            continue  # too small, a streak (a line of text, an edge), or a sparse scatter
        found.append(Region(int(x) * CELL, int(y) * CELL, int(x + w) * CELL, int(y + h) * CELL))
    found.sort(key=lambda region: region.area, reverse=True)
    return found[:limit]
