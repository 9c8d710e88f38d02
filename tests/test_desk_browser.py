"""The desk in a real browser (Debian's chromium through Playwright): desk staff register a holder with a
photo, issue a badge and download its PDF; a lead cannot reach the issuing pages; a visitor reaches nothing."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select
from werkzeug.serving import make_server

from gateway import cards
from gateway.cli import add_operator
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import Badge
from gateway.web import create_app
from tests.test_desk_cards import decode

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = os.environ.get("ACCESSGW_SCREENSHOTS")  # a folder to keep the screenshots in, for a person to look at
pytestmark = [pytest.mark.browser, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


@pytest.fixture
def live_server(instance) -> Iterator[str]:  # type: ignore[no-untyped-def]
    add_operator(instance, "desk1", "desk", "desk-password-1")
    add_operator(instance, "lead1", "lead", "lead-password-1")
    server = make_server("127.0.0.1", 0, create_app(instance.folder), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def shot(page, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    folder = Path(SHOTS) if SHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def log_in(page, base: str, user: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("button[type=submit]")


def test_desk_registers_a_holder_with_a_photo_issues_and_downloads_the_card(  # type: ignore[no-untyped-def]
    live_server: str, browser, instance, tmp_path: Path
) -> None:
    photo = tmp_path / "lea.jpg"
    Image.new("RGB", (640, 820), (170, 190, 210)).save(photo, "JPEG")
    page = browser.new_page(accept_downloads=True)  # type: ignore[attr-defined]
    log_in(page, live_server, "desk1", "desk-password-1")
    page.wait_for_selector("#holders")

    page.click("text=Contingents")
    page.fill("#code", "GN-75")
    page.fill("#name", "Gendarmerie nationale, Paris")
    page.select_option("#kind", "gendarmerie")
    page.fill("#org-country", "FR")
    page.click("#create-organisation")
    page.wait_for_selector("text=Organisation GN-75 created.")

    page.click("nav >> text=Register a holder")
    page.select_option("#organisation", "GN-75")
    page.fill("#family_name", "Martin")
    page.fill("#given_name", "Léa")
    page.fill("#country", "FR")
    page.select_option("#role", "gendarme")
    page.check("input[name=zones][value=STADIUM-PERIMETER]")
    page.check("input[name=zones][value=STADIUM-CONCOURSE]")
    page.fill("#first_day", "2030-07-20")
    page.fill("#last_day", "2030-08-11")
    page.fill("#shifts", "mon-fri 06:00-14:00")
    page.set_input_files("#photo", str(photo))
    shot(page, tmp_path, "desk-register")
    page.click("#save")
    page.wait_for_selector("#holder-name")
    assert "is registered" in page.inner_text("[role=status]")
    assert page.eval_on_selector("#holder-photo", "img => img.naturalWidth") == 350  # cropped and shrunk
    shot(page, tmp_path, "desk-holder")

    page.click("#issue-link")
    page.click("#issue")
    page.wait_for_selector("#badge-id")
    badge_id = page.inner_text("#badge-id")
    page.wait_for_function("document.getElementById('card-preview').naturalWidth > 0")
    shot(page, tmp_path, "desk-badge")
    with page.expect_download() as info:
        page.click("#download-pdf")
    pdf = Path(info.value.path()).read_bytes()
    assert info.value.suggested_filename == f"badge-{badge_id}.pdf"
    with session_factory(make_engine(instance.settings.database_url))() as s:
        token = s.scalar(select(Badge.token).where(Badge.id == badge_id))
    [code] = decode(cards.page_png(pdf, dpi=300))
    assert code.text == token


def test_a_lead_cannot_reach_the_issuing_pages(live_server: str, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()  # type: ignore[attr-defined]
    log_in(page, live_server, "lead1", "lead-password-1")
    page.wait_for_selector("#decisions")
    nav = page.inner_text("nav.main")
    assert "Register a holder" not in nav and "Import CSV" not in nav and "Holders" in nav
    for path in ("/desk/holders/new", "/desk/import", "/desk/organisations", "/desk/holders/x/issue"):
        response = page.goto(f"{live_server}{path}")
        assert response is not None and response.status == 403, path
        assert page.inner_text("#error-message") == "Your role may not open this page."
    shot(page, tmp_path, "lead-refused")


def test_a_logged_out_visitor_reaches_nothing(live_server: str, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()  # type: ignore[attr-defined]
    for path in ("/", "/desk/holders", "/desk/holders/new", "/desk/import", "/admin/keys", "/admin/tokens"):
        page.goto(f"{live_server}{path}")
        assert page.url.startswith(f"{live_server}/login"), path
        assert page.locator("#username").count() == 1
    response = page.goto(f"{live_server}/api/v1/holders")
    assert response is not None and response.status == 401
    assert json.loads(page.inner_text("body"))["error"] == "unauthorized"


