"""The guard's gate page in a real browser (Debian's chromium through Playwright), served by the reader, talking
to a real decision-side guard worker over the suite's Mosquitto: login with badge + PIN, look-up, a manual
decision, a forced grant with a reason that reaches the bridge, the audit and the leads' page, and a guard
without the override right who cannot force anything."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from gateway import contract, guards
from gateway.broker_setup import GATEWAY_USER
from gateway.cli import add_operator
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry, Badge
from gateway.holders import Actor
from gateway.manual_decisions import GuardDesk
from gateway.manual_worker import GuardWorker
from gateway.mqttlink import BrokerAddress
from gateway.web import create_app
from readers.gate_page_run import GatePageService
from readers.gateway_link import GatewayLink
from tests.factories import badged_holder
from tests.mqtt_helpers import Listener
from tests.test_desk_browser import CHROMIUM, CHROMIUM_ARGS, log_in

READER, GATE = "STA-G1-IN", "STA-G1"
pytestmark = [pytest.mark.browser, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Gate:
    url: str
    sessions: object
    plain: Badge  # a guard without the override right, PIN 1234
    chief: Badge  # a guard with it, PIN 987654
    visitor: Badge  # a holder whose badge opens the station, not the stadium


@pytest.fixture
def gate(instance, site, broker) -> Iterator[Gate]:  # type: ignore[no-untyped-def]
    now = utc_now()
    stadium = ["STADIUM-PERIMETER", "STADIUM-CONCOURSE"]
    plain = badged_holder(instance, site, stadium, now, name=("Durand", "Paul"))
    chief = badged_holder(instance, site, stadium, now, name=("Moreau", "Anne"))
    visitor = badged_holder(
        instance, site, ["STATION-CHECKPOINT"], now, name=("Schmidt", "Jonas"),
        organisation=("BPOL", "Bundespolizei", "police", "DE"),
    )
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s, s.begin():
        guards.set_guard(s, plain.holder_id, "1234", False, now, Actor("test-desk"))
        guards.set_guard(s, chief.holder_id, "987654", True, now, Actor("test-desk"))
    worker = GuardWorker(
        GuardDesk(site, lambda: instance.keyring, instance.settings.issuer, sessions, utc_now),
        BrokerAddress("127.0.0.1", broker.port, GATEWAY_USER, broker.password(GATEWAY_USER)),
        "test-gate-page-guards",
    )
    public = instance.keyring.decision_signing.public_key()
    keys = {contract.key_id(public): public}
    reader_address = BrokerAddress("127.0.0.1", broker.port, READER, broker.password(READER))
    link = GatewayLink(reader_address, READER, GATE, keys, lambda: int(time.time() * 1000))
    page = GatePageService(reader_address, READER, GATE, keys, link.forward_to_bridge, ("127.0.0.1", 0))
    worker.start()
    link.start()
    page.start()
    try:
        yield Gate(page.server.url, sessions, plain, chief, visitor)
    finally:
        page.stop()
        link.stop()
        worker.stop()


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def guard_logs_in(page, gate: Gate, badge: str, pin: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(gate.url + "/")
    page.fill("#badge", badge)
    page.fill("#pin", pin)
    page.click("#log-in")
    page.wait_for_selector("#on-duty")


def look_up_and_open(page, query: str, name: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#query", query)
    page.click("#search")
    page.wait_for_selector("#holders")
    page.click(f"#holders a:has-text('{name}')")
    page.wait_for_selector("#holder")


def entries(gate: Gate, kind: str) -> list[AuditEntry]:
    with gate.sessions() as s:  # type: ignore[operator]
        return list(s.scalars(select(AuditEntry).where(AuditEntry.kind == kind).order_by(AuditEntry.seq)))


def test_a_chief_guard_looks_up_decides_and_forces_a_grant_that_reaches_bridge_audit_and_leads(  # type: ignore[no-untyped-def]
    gate: Gate, browser, broker, instance
) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(gate.url + "/")
    page.fill("#badge", gate.chief.id)
    page.fill("#pin", "000000")
    page.click("#log-in")
    assert "not accepted" in page.inner_text("#flash")

    guard_logs_in(page, gate, gate.chief.id, "987654")
    assert "Anne MOREAU" in page.inner_text("#on-duty") and "override right" in page.inner_text("#on-duty")
    look_up_and_open(page, "Bundespolizei", "Jonas SCHMIDT")
    assert "police · Bundespolizei" in page.inner_text("#holder")

    page.click("#decide")
    page.wait_for_selector("#decision")
    assert "DENIED" in page.inner_text("#decision") and "zone_not_permitted" in page.inner_text("#decision")
    [manual] = [e for e in entries(gate, "decision") if e.mode == "manual"]
    assert (manual.operator, manual.allow) == (guards.identity(gate.chief.holder_id), False)

    with Listener(broker, "bridge.STA-G1", [contract.gate_command_topic(GATE)]) as bridge:
        page.select_option("#why", "medical_emergency")
        page.fill("#note", "collapsed <b>outside</b>")
        page.click("#force-grant")
        page.wait_for_selector("#decision.forced")
        assert "GRANTED" in page.inner_text("#decision") and "forced_grant" in page.inner_text("#decision")
        command = bridge.wait_for(lambda m: contract.DecisionAnswer.from_json(bytes(m.payload)).allow)
    assert command is not None
    opened = contract.DecisionAnswer.from_json(bytes(command.payload))
    [forced] = [e for e in entries(gate, "decision") if e.mode == "forced"]
    assert (opened.nonce, opened.reason, opened.gate) == (forced.ref, "forced_grant", GATE)
    assert "collapsed <b>outside</b>" in forced.detail
    [alarm] = entries(gate, "alarm")
    assert (alarm.reason, alarm.operator) == ("forced_grant", guards.identity(gate.chief.holder_id))

    # The gate's last decision is the forced one, with the holder's card.
    page.goto(gate.url + "/")
    assert "Jonas SCHMIDT" in page.inner_text("#last") and "forced" in page.inner_text("#last")

    # The leads see the alarm.
    add_operator(instance, "lead1", "lead", "lead-password-1")
    server = make_server("127.0.0.1", 0, create_app(instance.folder), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        leads = browser.new_page()  # type: ignore[attr-defined]
        log_in(leads, f"http://127.0.0.1:{server.server_port}", "lead1", "lead-password-1")
        leads.goto(f"http://127.0.0.1:{server.server_port}/")
        leads.wait_for_selector("#alarms")
        alarms = leads.inner_text("#alarms")
        assert "forced grant" in alarms and "collapsed <b>outside</b>" in alarms  # shown as text, escaped
    finally:
        server.shutdown()

    page.click("#leave")
    page.wait_for_selector("#log-in")
    assert [e.detail for e in entries(gate, "guard_logout")] == ["left the post"]


def test_a_guard_without_the_override_right_cannot_force_anything(gate: Gate, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()  # type: ignore[attr-defined]
    guard_logs_in(page, gate, gate.plain.id, "1234")
    look_up_and_open(page, gate.visitor.id, "Jonas SCHMIDT")
    page.click("#decide")
    page.wait_for_selector("#decision")
    assert "DENIED" in page.inner_text("#decision")
    assert page.query_selector("#force") is None  # no form to force with
    # Submitting the force form anyway, with the page's own CSRF token, is refused by the gateway.
    csrf = page.get_attribute("input[name=csrf]", "value")
    response = page.request.post(
        gate.url + "/force",
        form={"csrf": csrf, "holder": gate.visitor.holder_id, "why": "medical_emergency", "note": "please"},
    )
    assert response.ok
    assert "do not have the right" in response.text()
    assert [e.mode for e in entries(gate, "decision")] == ["manual"]
    assert entries(gate, "alarm") == []
    assert len(entries(gate, "override_refused")) == 1


def test_forms_without_the_sessions_csrf_token_are_refused(gate: Gate, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()  # type: ignore[attr-defined]
    guard_logs_in(page, gate, gate.plain.id, "1234")
    response = page.request.post(gate.url + "/decide", form={"csrf": "guessed", "holder": gate.visitor.holder_id})
    assert response.status == 403
    assert entries(gate, "decision") == []
