"""The leads' views in a real browser (Debian's chromium through Playwright): search with filters and pages,
a holder's trail, a gate's traffic, a CSV export download, and the dashboard's three server-drawn charts."""

from __future__ import annotations

import csv
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from gateway.cli import add_operator
from gateway.instance import Instance
from gateway.site import Site
from gateway.web import create_app
from tests.test_leads_search import Data, expect, seed

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = os.environ.get("ACCESSGW_SCREENSHOTS")
pytestmark = [pytest.mark.browser, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


@pytest.fixture
def seeded(instance: Instance, site: Site) -> Data:
    return seed(instance, site, count=120)  # more than one page of 50


@pytest.fixture
def live_server(instance: Instance, seeded: Data) -> Iterator[str]:
    add_operator(instance, "lead1", "lead", "lead-password-1")
    server = make_server("127.0.0.1", 0, create_app(instance.folder), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def page(live_server: str, tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(accept_downloads=True)
            tab.goto(f"{live_server}/login")
            tab.fill("#username", "lead1")
            tab.fill("#password", "lead-password-1")
            tab.click("button[type=submit]")
            tab.wait_for_selector("#decisions")
            yield tab
        finally:
            browser.close()


def shot(page: Any, tmp_path: Path, name: str) -> None:
    folder = Path(SHOTS) if SHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def seqs(page: Any) -> list[int]:
    return [int(s) for s in page.eval_on_selector_all("#entries tr.entry", "rows => rows.map(r => r.dataset.seq)")]


def test_lead_searches_pages_and_follows_a_holder_trail(page: Any, seeded: Data, tmp_path: Path) -> None:
    page.click("nav.main >> text=Search")
    page.wait_for_selector("#entries")
    everything = expect(seeded, lambda d: True)
    assert seqs(page) == everything[:50]
    page.click("#older")
    page.wait_for_selector("#entries")
    assert seqs(page) == everything[50:100]

    page.select_option("#organisation", "GN-75")
    page.select_option("#decision", "deny")
    page.click("#apply")
    page.wait_for_selector("#entries")
    wanted = expect(seeded, lambda d: d.organisation == "GN-75" and not d.allow)
    assert seqs(page) == wanted and page.locator("#older").count() == 0
    shot(page, tmp_path, "leads-search")

    page.locator("#entries a.holder").first.click()
    page.wait_for_selector("#holder-name")
    name = page.inner_text("#holder-name")
    holder = seeded.holders[name.split()[0]]
    assert set(expect(seeded, lambda d: d.holder == holder)[:50]) <= set(seqs(page))
    where = "STADIUM-CONCOURSE" if name.startswith("Martin") else "no passage yet"  # only Martin moved inside
    assert where in page.inner_text("#position")
    shot(page, tmp_path, "leads-trail")


def test_lead_sees_a_gate_traffic_and_downloads_a_safe_csv(page: Any, seeded: Data, tmp_path: Path) -> None:
    page.click("nav.main >> text=Gate traffic")
    page.click("#gates >> text=GDN-G1")
    page.wait_for_selector("#entries")
    assert seqs(page) == expect(seeded, lambda d: d.gate == "GDN-G1")[:50]

    page.goto(page.url.split("/leads/")[0] + "/leads/search?gate=STA-G1&kind=decision")
    with page.expect_download() as info:
        page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text(encoding="utf-8"))))
    assert [int(r["seq"]) for r in rows] == expect(seeded, lambda d: d.gate == "STA-G1")
    assert all(not r["detail"].startswith(("=", "+", "-", "@", "\t")) for r in rows)
    assert any(r["detail"] == "'@SUM(1+1)" for r in rows)  # seed 5, at STA-G1: shown as text, not run


def test_dashboard_draws_three_charts_with_the_counts(page: Any, seeded: Data, tmp_path: Path) -> None:
    page.click("nav.main >> text=Dashboard")
    page.fill("#since", "2026-07-26T08:00")
    page.fill("#until", "2026-07-27T04:00")
    page.click("#apply")
    page.wait_for_selector("#chart-occupancy")
    for chart in ("#chart-decisions-per-gate", "#chart-denials-by-reason", "#chart-occupancy"):
        box = page.locator(chart).bounding_box()
        assert box and box["width"] > 300 and box["height"] > 100, chart  # drawn, not just present
    totals = dict(
        page.eval_on_selector_all(
            "#chart-decisions-per-gate polyline.series", "ls => ls.map(l => [l.dataset.name, l.dataset.total])"
        )
    )
    wanted: dict[str, int] = {}
    for d in seeded.decisions:
        wanted[d.gate] = wanted.get(d.gate, 0) + 1
    assert {gate: int(float(total)) for gate, total in totals.items()} == wanted
    bars = dict(
        page.eval_on_selector_all(
            "#chart-denials-by-reason rect.bar", "rs => rs.map(r => [r.dataset.name, r.dataset.value])"
        )
    )
    assert {k: int(v) for k, v in bars.items()} == {
        "revoked": sum(1 for d in seeded.decisions if d.reason == "revoked"),
        "zone_not_permitted": sum(1 for d in seeded.decisions if d.reason == "zone_not_permitted"),
    }
    lines = dict(
        page.eval_on_selector_all(
            "#chart-occupancy polyline.series", "ls => ls.map(l => [l.dataset.name, l.dataset.last])"
        )
    )
    assert lines == {"STADIUM-PERIMETER": "0", "STADIUM-CONCOURSE": "1"}  # Weber left; Martin is in the concourse
    shot(page, tmp_path, "leads-dashboard")
