"""Small SVG charts drawn on the server: the leads' machines have no internet, so no JavaScript or CDN.

Pure: text in, SVG text out. Every label is escaped (gate and zone codes come from the site file, reasons from
the audit). Each chart is an <svg> with role="img", a <title>, and data attributes the browser test reads.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from html import escape

PALETTE = (
    "#0b3d91",
    "#b42318",
    "#1a7f37",
    "#b54708",
    "#6941c6",
    "#0e7490",
    "#c11574",
    "#4d7c0f",
    "#475467",
    "#9a3412",
)
WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 170, 24, 40  # margins; the legend lives in the right one


def _nice_max(value: float) -> float:
    """A round axis top at or above `value` (1, 2, 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _label(t: dt.datetime, span: dt.timedelta) -> str:
    return t.strftime("%d/%m %H:%M") if span <= dt.timedelta(days=3) else t.strftime("%d/%m")


def line_chart(
    title: str,
    times: Sequence[dt.datetime],
    series: Mapping[str, Sequence[float]],
    *,
    chart_id: str,
    step: bool = False,
) -> str:
    """One line per series over shared time points; `step` draws levels held until the next point (occupancy)."""
    parts = [_open(chart_id, title, len(series))]
    if not times or not series:
        return "".join([*parts, _empty(), "</svg>"])
    top = _nice_max(max((max(v) for v in series.values() if v), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = len(times)

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return TOP + plot_h - plot_h * v / top

    parts.append(_y_axis(top, plot_w, plot_h))
    span = times[-1] - times[0]
    for i in sorted({0, n // 2, n - 1}):
        parts.append(
            f'<text x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" font-size="11">'
            f"{escape(_label(times[i], span))}</text>"
        )
    for k, (name, values) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        points: list[str] = []
        for i, v in enumerate(values):
            if step and i > 0:
                points.append(f"{x(i):.1f},{y(values[i - 1]):.1f}")
            points.append(f"{x(i):.1f},{y(v):.1f}")
        parts.append(
            f'<polyline class="series" data-name="{escape(name)}" data-total="{sum(values):g}" '
            f'data-last="{values[-1] if values else 0:g}" fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{" ".join(points)}"/>'
        )
        parts.append(_legend(k, name, colour))
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, bars: Mapping[str, int], *, chart_id: str) -> str:
    """Horizontal bars, largest first (denials by reason)."""
    items = sorted(bars.items(), key=lambda kv: (-kv[1], kv[0]))
    height = max(TOP + BOTTOM + 22 * len(items), 120)
    parts = [_open(chart_id, title, len(items), height)]
    if not items:
        return "".join([*parts, _empty(), "</svg>"])
    top = _nice_max(items[0][1])
    label_w, plot_w = 190, WIDTH - 190 - 60
    for i, (name, count) in enumerate(items):
        y0 = TOP + 22 * i
        w = plot_w * count / top
        parts.append(
            f'<text x="{label_w - 8}" y="{y0 + 14}" text-anchor="end" font-size="12">'
            f"{escape(name.replace('_', ' '))}</text>"
            f'<rect class="bar" data-name="{escape(name)}" data-value="{count}" x="{label_w}" y="{y0 + 3}" '
            f'width="{w:.1f}" height="15" fill="{PALETTE[1]}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y0 + 14}" font-size="12">{count}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _open(chart_id: str, title: str, count: int, height: int = HEIGHT) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{escape(chart_id)}" class="chart" role="img" '
        f'data-series="{count}" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'font-family="system-ui, DejaVu Sans, sans-serif"><title>{escape(title)}</title>'
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>'
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="600">{escape(title)}</text>'
    )


def _empty() -> str:
    return f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="#5b6b7a">No data.</text>'


def _y_axis(top: float, plot_w: float, plot_h: float) -> str:
    out = []
    for frac in (0, 0.5, 1):
        yy = TOP + plot_h - plot_h * frac
        out.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#d8dee4"/>'
            f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end" font-size="11">{top * frac:g}</text>'
        )
    return "".join(out)


def _legend(k: int, name: str, colour: str) -> str:
    lx, ly = WIDTH - RIGHT + 14, TOP + 16 * k
    return (
        f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{colour}"/>'
        f'<text x="{lx + 16}" y="{ly + 9}" font-size="11">{escape(name)}</text>'
    )
