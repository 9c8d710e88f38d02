"""The web side: JWKS, login, CSRF, refusal to start without keys, and a real browser (Debian's chromium)."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from gateway.cli import add_operator
from gateway.instance import InstanceError, load_instance
from gateway.web import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def app(instance) -> Flask:  # type: ignore[no-untyped-def]
    # The test client speaks plain http; the Secure cookie flag itself is checked below.
    return create_app(instance.folder, {"SESSION_COOKIE_SECURE": False})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _csrf(client: FlaskClient, path: str = "/login") -> str:
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "form without CSRF token"
    return match.group(1)


def test_jwks_lists_badge_and_decision_keys(client: FlaskClient, instance) -> None:  # type: ignore[no-untyped-def]
    keys = client.get("/.well-known/jwks.json").get_json()["keys"]
    purposes = {k["kid"]: k["acs_purpose"] for k in keys}
    assert purposes == {instance.keyring.badge_kid: "badge", instance.keyring.decision_kid: "decision"}
    assert all(k["kty"] == "OKP" and k["crv"] == "Ed25519" and "d" not in k for k in keys)


def test_pages_need_a_login(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    # The JSON API answers 401 (with a WWW-Authenticate challenge), never a redirect to a login page.
    api = client.get("/api/v1/decisions")
    assert api.status_code == 401 and api.headers["WWW-Authenticate"].startswith("Bearer")


def test_login_with_wrong_password_is_refused(client: FlaskClient, instance) -> None:  # type: ignore[no-untyped-def]
    add_operator(instance, "lead1", "lead", "right-password")
    token = _csrf(client)
    response = client.post("/login", data={"username": "lead1", "password": "wrong", "csrf_token": token})
    assert response.status_code == 401
    assert client.get("/").status_code == 302


def test_login_without_csrf_token_is_refused(client: FlaskClient, instance) -> None:  # type: ignore[no-untyped-def]
    add_operator(instance, "lead2", "lead", "pw-lead2")
    response = client.post("/login", data={"username": "lead2", "password": "pw-lead2"})
    assert response.status_code == 400


def test_lead_logs_in_and_sees_decisions(client: FlaskClient, instance) -> None:  # type: ignore[no-untyped-def]
    add_operator(instance, "lead3", "lead", "pw-lead3")
    token = _csrf(client)
    response = client.post("/login", data={"username": "lead3", "password": "pw-lead3", "csrf_token": token})
    assert response.status_code == 302
    page = client.get("/")
    assert page.status_code == 200 and "No decision logged yet." in page.get_data(as_text=True)
    assert client.get("/api/v1/decisions").get_json() == []


def test_session_cookie_is_secure_httponly_samesite(instance) -> None:  # type: ignore[no-untyped-def]
    app = create_app(instance.folder)
    assert app.config["SESSION_COOKIE_SECURE"] and app.config["SESSION_COOKIE_HTTPONLY"]
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"


def test_gateway_refuses_to_start_without_keys(instance) -> None:  # type: ignore[no-untyped-def]
    os.remove(instance.folder / "keys" / "decision.pem")
    with pytest.raises(InstanceError, match=r"decision\.pem"):
        create_app(instance.folder)


def test_gateway_refuses_a_private_key_readable_by_others(instance) -> None:  # type: ignore[no-untyped-def]
    key = instance.folder / "keys" / f"badge-{instance.keyring.badge_kid}.pem"
    os.chmod(key, 0o644)
    with pytest.raises(InstanceError, match="readable by others"):
        load_instance(instance.folder)


def test_init_refuses_to_overwrite_an_instance(instance, site) -> None:  # type: ignore[no-untyped-def]
    from gateway.instance import create_instance

    with pytest.raises(InstanceError, match="already holds an instance"):
        create_instance(instance.folder, "sqlite://", Path("zones.yaml"), site.code)


@pytest.fixture
def live_server(instance) -> Iterator[str]:  # type: ignore[no-untyped-def]
    app = create_app(instance.folder)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_browser_login_and_decisions_page(live_server: str, instance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    add_operator(instance, "lead4", "lead", "pw-lead4")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{live_server}/")
            assert "/login" in page.url
            page.fill("#username", "lead4")
            page.fill("#password", "wrong")
            page.click("button[type=submit]")
            assert page.locator("[role=alert]").inner_text() == "Unknown user or wrong password."
            page.fill("#username", "lead4")
            page.fill("#password", "pw-lead4")
            page.click("button[type=submit]")
            page.wait_for_selector("#decisions")
            assert page.locator("#total").inner_text() == "0"
            assert "lead4 (lead)" in page.locator("header").inner_text()
            page.screenshot(path=str(tmp_path / "decisions.png"))
            page.click("text=Log out")
            page.wait_for_selector("#username")
        finally:
            browser.close()


def test_alarms_from_gates_and_readers_are_shown_to_leads(client: FlaskClient, instance, site) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from gateway import contract
    from gateway.db.engine import make_engine, session_factory
    from gateway.gate_events import GateEventService
    from gateway.mqttlink import BrokerAddress
    from gateway.reader_monitor import ReaderMonitor

    sessions = session_factory(make_engine(instance.settings.database_url))
    now = dt.datetime(2026, 7, 24, 21, 5, tzinfo=dt.UTC)
    events = GateEventService(sessions=sessions, clock=lambda: now)
    events.record(contract.GateEvent(gate="STA-G6", kind="door_forced", seq=1, at_ms=1_785_000_000_000))
    events.record(contract.GateEvent(gate="STA-G6", kind="controller_online", seq=2, at_ms=1_785_000_001_000))
    ReaderMonitor(BrokerAddress("127.0.0.1", 1, "gateway", "-"), "m", site, sessions, lambda: now).record(
        contract.ReaderStatus(
            reader="CDG-G2-IN",
            state="offline",
            at_ms=1_785_000_002_000,
            frames=0,
            decodes=0,
            decisions=0,
            offline_queue=0,
        )
    )
    add_operator(instance, "lead5", "lead", "pw-lead5")
    client.post("/login", data={"username": "lead5", "password": "pw-lead5", "csrf_token": _csrf(client)})
    page = client.get("/").get_data(as_text=True)
    alarms = page.split('id="alarms"')[1].split("</table>")[0]
    assert "door forced" in alarms and "STA-G6" in alarms
    assert "reader offline" in alarms and "CDG-G2-IN" in alarms
    assert "controller online" not in alarms  # not an alarm


def test_muster_lists_who_is_inside_each_zone_for_leads_only(client: FlaskClient, instance, site) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from gateway import badges, positions
    from gateway.db.engine import make_engine, session_factory

    sessions = session_factory(make_engine(instance.settings.database_url))
    now = dt.datetime(2026, 7, 24, 21, 5, tzinfo=dt.UTC)
    with sessions() as s, s.begin():
        org = badges.get_or_create_organisation(s, "GN-75", "Gendarmerie Paris", "gendarmerie", "FR")
        inside = badges.register_holder(s, site, org, "Lefevre", "Chloe", "gendarme", "FR", now)
        left = badges.register_holder(s, site, org, "Garnier", "Hugo", "gendarme", "FR", now)
        positions.move(s, inside.id, "STADIUM-OPS", "STA-G6", now)
        positions.move(s, left.id, "STADIUM-OPS", "STA-G6", now)
        positions.move(s, left.id, "outside", "STA-G1", now)
    add_operator(instance, "desk6", "desk", "pw-desk6")
    client.post("/login", data={"username": "desk6", "password": "pw-desk6", "csrf_token": _csrf(client)})
    assert client.get("/muster").status_code == 403
    client.post("/logout", data={"csrf_token": _csrf(client, "/")})
    add_operator(instance, "lead6", "lead", "pw-lead6")
    client.post("/login", data={"username": "lead6", "password": "pw-lead6", "csrf_token": _csrf(client)})
    page = client.get("/muster").get_data(as_text=True)
    ops = page.split('id="zone-STADIUM-OPS"')[1].split("</section>")[0]
    assert "LEFEVRE Chloe" in ops and "Garnier" not in page
    assert 'id="total">1<' in page
