"""The leads' dashboard: counts per gate over time and denials by reason (SQL on both databases), occupancy
replayed from passages, and the server-drawn SVG charts."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from flask import Flask

from gateway import dashboards, plots
from gateway.audit_search import Filter
from gateway.site import Site
from tests.test_leads_search import BASE, Data, app, data, logged_in, sessions  # noqa: F401  (fixtures)

SVG = "{http://www.w3.org/2000/svg}"


def test_bucket_keeps_the_chart_under_a_hundred_points() -> None:
    assert dashboards.bucket_for(BASE, BASE + dt.timedelta(hours=6)) == 300
    assert dashboards.bucket_for(BASE, BASE + dt.timedelta(hours=24)) == 900
    assert dashboards.bucket_for(BASE, BASE + dt.timedelta(days=30)) == 86400


def test_decisions_per_gate_are_counted_per_time_bucket(data: Data, sessions: Any, site: Site) -> None:  # noqa: F811
    since, until = BASE, BASE + dt.timedelta(hours=6)  # 5-minute buckets; the seed decides every 10 minutes
    with sessions() as s:
        ts = dashboards.decisions_per_gate(s, site, Filter(), since, until)
    assert len(ts.times) == 72 and ts.times[0] == BASE and ts.times[1] - ts.times[0] == dt.timedelta(minutes=5)
    for gate in {d.gate for d in data.decisions}:
        wanted = [0.0] * 72
        for d in data.decisions:
            if d.gate == gate and d.at < until:
                wanted[int((d.at - BASE).total_seconds() // 300)] += 1
        assert ts.series[gate] == wanted, gate
    with sessions() as s:
        denied_bowl = dashboards.decisions_per_gate(s, site, Filter(decision="deny", zone="STADIUM-BOWL"), since, until)
    assert sum(map(sum, denied_bowl.series.values())) == sum(
        1 for d in data.decisions if not d.allow and d.gate in ("STA-G3", "STA-G4")
    )


def test_denials_are_counted_by_reason(data: Data, sessions: Any, site: Site) -> None:  # noqa: F811
    with sessions() as s:
        counts = dashboards.denials_by_reason(s, site, Filter(), BASE, BASE + dt.timedelta(days=1))
    wanted: dict[str, int] = {}
    for d in data.decisions:
        if not d.allow:
            wanted[d.reason] = wanted.get(d.reason, 0) + 1
    assert counts == wanted and set(counts) == {"revoked", "zone_not_permitted"}


def test_occupancy_is_replayed_from_passages(data: Data, sessions: Any, site: Site) -> None:  # noqa: F811
    # Seeded passages: Martin into the perimeter at +5 min, Weber at +65, Martin on into the concourse at
    # +125, Weber back outside at +185.
    with sessions() as s:
        ts = dashboards.occupancy(s, site, BASE, BASE + dt.timedelta(hours=6))
    assert ts.times[0] == BASE + dt.timedelta(minutes=5)  # levels stand at the end of each bucket
    perimeter, concourse = ts.series["STADIUM-PERIMETER"], ts.series["STADIUM-CONCOURSE"]

    def at(minutes: int) -> int:
        return minutes // 5 - 1  # the bucket ending at +minutes

    assert perimeter[at(5)] == 0 and perimeter[at(10)] == 1  # a passage at the boundary counts after it
    assert perimeter[at(70)] == 2 and perimeter[at(130)] == 1 and concourse[at(130)] == 1
    assert perimeter[at(190)] == 0 and concourse[-1] == 1 and ts.series["AIRPORT-LANDSIDE"] == [0.0] * 72
    # A window that starts later still begins from the replayed level.
    with sessions() as s:
        later = dashboards.occupancy(s, site, BASE + dt.timedelta(hours=2, minutes=30), BASE + dt.timedelta(hours=3))
    assert later.series["STADIUM-PERIMETER"][0] == 1 and later.series["STADIUM-CONCOURSE"][0] == 1


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_line_chart_is_valid_svg_with_one_line_per_series_and_escaped_labels() -> None:
    times = [BASE + dt.timedelta(hours=h) for h in range(4)]
    svg = plots.line_chart("Per <gate>", times, {"G1": [1, 2, 3, 0], "<script>": [0, 0, 5, 1]}, chart_id="c1")
    root = _parse(svg)
    lines = root.findall(f"{SVG}polyline")
    assert [(p.get("data-name"), p.get("data-total")) for p in lines] == [("G1", "6"), ("<script>", "6")]
    assert "<script>" not in svg and root.find(f"{SVG}title").text == "Per <gate>"  # type: ignore[union-attr]
    assert all(len(p.get("points", "").split()) == 4 for p in lines)
    stepped = _parse(plots.line_chart("Levels", times, {"Z": [1, 2, 2, 0]}, chart_id="c2", step=True))
    assert len(stepped.find(f"{SVG}polyline").get("points", "").split()) == 7  # type: ignore[union-attr]
    empty = _parse(plots.line_chart("Nothing", [], {}, chart_id="c3"))
    assert empty.find(f"{SVG}text[@class='empty']") is not None


def test_bar_chart_puts_the_largest_first() -> None:
    root = _parse(plots.bar_chart("Denials", {"revoked": 3, "expired": 7, "zone_full": 1}, chart_id="b"))
    bars = [(r.get("data-name"), int(r.get("data-value", "0"))) for r in root.findall(f"{SVG}rect[@class='bar']")]
    assert bars == [("expired", 7), ("revoked", 3), ("zone_full", 1)]
    widths = [float(r.get("width", "0")) for r in root.findall(f"{SVG}rect[@class='bar']")]
    assert widths[0] > widths[1] > widths[2] > 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_dashboard_page_draws_three_charts(app: Flask, data: Data) -> None:  # noqa: F811
    lead = logged_in(app, "lead1")
    html = lead.get("/leads/dashboard?since=2026-07-26T08:00&until=2026-07-26T14:00").get_data(as_text=True)
    for chart in ("chart-decisions-per-gate", "chart-denials-by-reason", "chart-occupancy"):
        assert f'id="{chart}"' in html
    assert "<script" not in html  # no JavaScript at all
    assert lead.get("/leads/dashboard?since=2026-07-26T14:00&until=2026-07-26T08:00").status_code == 400
