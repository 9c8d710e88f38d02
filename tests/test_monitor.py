"""Alarms and their acknowledgement on both databases; the live monitor's stream through the web app."""

from __future__ import annotations

import datetime as dt
import re
import secrets

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from gateway import alarms, contract
from gateway.audit_verify import verify_database
from gateway.cli import add_operator
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.gate_events import GateEventService
from gateway.web import create_app
from gateway.web.monitor import read_since
from gateway.web.personal import Disclosure
from tests.factories import badged_holder, decision_service

NOW = dt.datetime(2026, 7, 26, 19, 30, tzinfo=dt.UTC)
AT_MS = 1_785_000_000_000


def _sessions(instance):  # type: ignore[no-untyped-def]
    return session_factory(make_engine(instance.settings.database_url))


def _gate_event(sessions, kind: str, seq: int, gate: str = "STA-G6") -> int:  # type: ignore[no-untyped-def]
    event = contract.GateEvent(gate=gate, kind=kind, seq=seq, at_ms=AT_MS + seq)
    return GateEventService(sessions=sessions, clock=lambda: NOW).record(event).audit_seq


def _intact(sessions, instance) -> bool:  # type: ignore[no-untyped-def]
    pub = instance.keyring.decision_signing.public_key()
    with sessions() as s:
        return verify_database(s, [], {contract.key_id(pub): pub}).ok


def test_acknowledging_an_alarm_is_logged_once_and_closes_it(instance) -> None:  # type: ignore[no-untyped-def]
    sessions = _sessions(instance)
    forced = _gate_event(sessions, "door_forced", 1)
    _gate_event(sessions, "controller_online", 2)  # not an alarm
    tamper = _gate_event(sessions, "tamper", 3, gate="STA-G1")
    with sessions() as s:
        assert [a.seq for a in alarms.unacknowledged(s)] == [tamper, forced]
    with sessions() as s, s.begin():
        ack = alarms.acknowledge(s, forced, "lead1", NOW, "guard sent, door closed")
    assert (ack.kind, ack.operator, ack.ref) == ("alarm_ack", "lead1", str(forced))
    assert "door forced at STA-G6: guard sent" in ack.detail
    with sessions() as s:
        assert [a.seq for a in alarms.unacknowledged(s)] == [tamper]
        assert set(alarms.acknowledgements(s, [forced, tamper])) == {forced}
    with pytest.raises(alarms.AlarmError, match="already acknowledged"), sessions() as s, s.begin():
        alarms.acknowledge(s, forced, "lead2", NOW)
    with pytest.raises(alarms.AlarmError, match="not an alarm"), sessions() as s, s.begin():
        alarms.acknowledge(s, forced + 1, "lead2", NOW)  # controller_online
    with sessions() as s:
        assert s.scalars(select(AuditEntry.operator).where(AuditEntry.kind == "alarm_ack")).all() == ["lead1"]
    assert _intact(sessions, instance)


def test_the_alarm_set_pairs_each_kind_with_its_own_reasons(instance) -> None:  # type: ignore[no-untyped-def]
    sessions = _sessions(instance)
    with sessions() as s, s.begin():  # a reader_status entry with a gate event's reason is not an alarm
        from gateway import audit

        audit.record_action(s, "reader_status", NOW, reader="STA-G1-IN", reason="tamper")
        audit.record_action(s, "reader_status", NOW, reader="STA-G1-IN", reason="reader_offline")
    with sessions() as s:
        assert [(a.kind, a.reason) for a in alarms.recent_alarms(s, 10)] == [("reader_status", "reader_offline")]


def test_read_since_gives_decisions_alarms_and_acknowledgements_in_order(instance, site) -> None:  # type: ignore[no-untyped-def]
    sessions = _sessions(instance)
    badge = badged_holder(instance, site, ["STADIUM-PERIMETER"], NOW, name=("Durand", "Ines"))
    with sessions() as s:
        start = int(s.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1)) or 0)
    service = decision_service(instance, site, lambda: NOW)
    service.answer(contract.DecisionRequest("STA-G1-IN", secrets.token_hex(16), badge.token, 0))
    forced = _gate_event(sessions, "door_forced", 7)
    with sessions() as s, s.begin():
        alarms.acknowledge(s, forced, "lead1", NOW)
    with sessions() as s:
        named, last = read_since(s, start, Disclosure(names=True, photo=False))
        anonymous, _ = read_since(s, start, Disclosure(names=False, photo=False))
        again, same = read_since(s, last, Disclosure(names=True, photo=False))
    assert [e["type"] for e in named] == ["decision", "alarm", "ack"]
    assert named[0]["holder"] == "DURAND Ines" and named[0]["allow"] is True and named[0]["badge"] == badge.id
    assert anonymous[0]["holder"] == badge.holder_id and "Durand" not in str(anonymous)
    assert named[1]["alarm"] == "door_forced" and named[2]["alarm"] == forced and named[2]["operator"] == "lead1"
    assert (again, same) == ([], last)


@pytest.fixture
def app(instance) -> Flask:  # type: ignore[no-untyped-def]
    # A one-second stream: the test reads it to its end, which proves that it ends.
    return create_app(instance.folder, {"SESSION_COOKIE_SECURE": False, "MONITOR_STREAM_SECONDS": 1})


def _log_in(client: FlaskClient, instance, user: str, role: str) -> None:  # type: ignore[no-untyped-def]
    add_operator(instance, user, role, f"pw-{user}")
    html = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token
    response = client.post("/login", data={"username": user, "password": f"pw-{user}", "csrf_token": token.group(1)})
    assert response.status_code == 302


def _csrf(client: FlaskClient) -> str:
    token = re.search(r'data-csrf="([^"]+)"', client.get("/monitor").get_data(as_text=True))
    assert token
    return token.group(1)


def test_the_stream_sends_new_entries_and_ends(app: Flask, instance) -> None:  # type: ignore[no-untyped-def]
    sessions = _sessions(instance)
    client = app.test_client()
    _log_in(client, instance, "lead1", "lead")
    page = client.get("/monitor").get_data(as_text=True)
    head = int(re.search(r'data-after="(\d+)"', page).group(1))  # type: ignore[union-attr]
    held = _gate_event(sessions, "door_held_open", 1)
    response = client.get(f"/monitor/stream?after={head}")
    assert response.mimetype == "text/event-stream"
    body = response.get_data(as_text=True)  # returns only because the stream ends by itself
    assert f"id: {held}\nevent: alarm\n" in body and '"alarm":"door_held_open"' in body
    # Reconnecting with Last-Event-ID goes on after the last event seen: nothing is sent twice.
    again = client.get("/monitor/stream?after=0", headers={"Last-Event-ID": str(held)}).get_data(as_text=True)
    assert "event: alarm" not in again


def test_a_lead_acknowledges_through_the_page_and_others_cannot(app: Flask, instance) -> None:  # type: ignore[no-untyped-def]
    sessions = _sessions(instance)
    forced = _gate_event(sessions, "door_forced", 1)
    desk = app.test_client()
    _log_in(desk, instance, "desk1", "desk")
    assert desk.get("/monitor").status_code == 403
    assert desk.get("/monitor/stream").status_code == 403
    lead = app.test_client()
    _log_in(lead, instance, "lead1", "lead")
    page = lead.get("/monitor").get_data(as_text=True)
    assert f'<tr class="unacknowledged" data-seq="{forced}">' in page and "not acknowledged" in page
    token = _csrf(lead)
    assert lead.post(f"/monitor/alarms/{forced}/ack").status_code == 400  # no CSRF token
    answer = lead.post(
        f"/monitor/alarms/{forced}/ack", data={"csrf_token": token}, headers={"Accept": "application/json"}
    )
    assert answer.status_code == 200 and answer.get_json()["operator"] == "lead1"
    twice = lead.post(
        f"/monitor/alarms/{forced}/ack", data={"csrf_token": token}, headers={"Accept": "application/json"}
    )
    assert twice.status_code == 409
    page = lead.get("/monitor").get_data(as_text=True)
    assert '<tr class="unacknowledged"' not in page and "acknowledged by lead1" in page
    with sessions() as s:
        assert s.scalar(select(AuditEntry.operator).where(AuditEntry.kind == "alarm_ack")) == "lead1"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_stream_ends_when_its_browser_goes_away(instance) -> None:  # type: ignore[no-untyped-def]
    import http.client
    import threading
    import time

    from werkzeug.serving import make_server

    sessions = _sessions(instance)
    app = create_app(instance.folder, {"SESSION_COOKIE_SECURE": False, "MONITOR_STREAM_SECONDS": 600})
    client = app.test_client()
    _log_in(client, instance, "lead1", "lead")
    cookie = client.get_cookie("session")
    assert cookie is not None
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def streaming() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if "process_request_thread" in t.name]

    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port)
        conn.request("GET", "/monitor/stream", headers={"Cookie": f"session={cookie.value}"})
        response = conn.getresponse()
        assert response.status == 200 and response.read1(64).startswith(b"retry:")
        assert len(streaming()) == 1
        response.close()  # the browser goes away: the socket is closed (the response holds it too)
        conn.close()
        # The server finds out when it next writes: new alarms give it something to write.
        for seq in range(1, 200):
            if not streaming():
                break
            _gate_event(sessions, "door_forced", seq)
            time.sleep(0.2)
        assert streaming() == []
    finally:
        server.shutdown()
