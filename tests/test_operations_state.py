"""Threat level, positions and occupancy on a real database: the next decision uses what was just recorded."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway import contract
from gateway.cli import add_operator
from gateway.db.models import AuditEntry, Occupancy, Position, Qualification
from gateway.decisions import DecisionService
from gateway.positions import record_passage
from gateway.threat import ThreatLevelError, set_threat_level
from tests.factories import badged_holder, decision_service

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 7, 24, 18, 0, tzinfo=dt.UTC)  # a Friday, 20:00 in Paris


@pytest.fixture
def world(instance, site):  # type: ignore[no-untyped-def]
    clock = [NOW]
    service = decision_service(instance, site, lambda: clock[0])
    badge = badged_holder(
        instance,
        site,
        ["STADIUM-PERIMETER", "STADIUM-CONCOURSE", "STADIUM-BOWL", "STADIUM-OPS"],
        NOW,
        role="private_guard",
        organisation=("PN-75", "Police nationale", "police", "FR"),
        name=("Bernard", "Ines"),
        valid=(dt.timedelta(days=-1), dt.timedelta(days=3)),
    )
    sessions = service.sessions
    return service, sessions, badge, clock


def ask(service: DecisionService, badge, reader: str) -> contract.DecisionAnswer:  # type: ignore[no-untyped-def]
    return service.answer(
        contract.DecisionRequest(reader=reader, nonce=secrets.token_hex(16), token=badge.token, sent_ms=0)
    )


def test_the_next_decision_uses_a_switched_threat_level(world, site) -> None:  # type: ignore[no-untyped-def]
    service, sessions, badge, _ = world
    assert ask(service, badge, "STA-G3-IN").reason == "granted"
    with sessions() as s, s.begin():
        assert set_threat_level(s, site, "heightened", "lead-1", NOW, "drill") == "vigilance"
    answer = ask(service, badge, "STA-G3-IN")
    assert (answer.allow, answer.reason) == (False, "qualification_missing")
    with sessions() as s:
        [entry] = s.scalars(select(AuditEntry).where(AuditEntry.kind == "threat_level"))
        assert (entry.reason, entry.operator, entry.detail) == (
            "heightened",
            "lead-1",
            "vigilance -> heightened: drill",
        )


def test_unknown_threat_level_is_refused_and_nothing_changes(world, site) -> None:  # type: ignore[no-untyped-def]
    _, sessions, _, _ = world
    with pytest.raises(ThreatLevelError), sessions() as s, s.begin():
        set_threat_level(s, site, "panic", "lead-1", NOW)
    with sessions() as s:
        assert s.scalars(select(AuditEntry).where(AuditEntry.kind == "threat_level")).all() == []


def test_qualifications_come_from_the_records(world) -> None:  # type: ignore[no-untyped-def]
    service, sessions, badge, _ = world
    assert ask(service, badge, "STA-G6-IN").reason == "qualification_missing"
    with sessions() as s, s.begin():
        s.add(
            Qualification(
                holder_id=badge.holder_id,
                kind="ops_room_clearance",
                reference="OPS-77",
                expires_at=NOW + dt.timedelta(days=1),
            )
        )
    assert ask(service, badge, "STA-G6-IN").reason == "granted"


def test_passage_moves_the_holder_and_hard_anti_passback_follows(world, site) -> None:  # type: ignore[no-untyped-def]
    service, sessions, badge, clock = world
    grant = ask(service, badge, "STA-G2-IN")  # into the concourse (hard anti-passback)
    assert grant.allow
    # A grant alone moves nobody: the same badge may ask again.
    assert ask(service, badge, "STA-G2-IN").allow
    with sessions() as s, s.begin():
        assert record_passage(s, site, grant.nonce, NOW) == "STADIUM-CONCOURSE"
    with sessions() as s:
        assert s.get(Position, badge.holder_id).zone == "STADIUM-CONCOURSE"  # type: ignore[union-attr]
        assert s.get(Occupancy, "STADIUM-CONCOURSE").count == 1  # type: ignore[union-attr]
    denied = ask(service, badge, "STA-G2-IN")
    assert (denied.allow, denied.reason) == (False, "anti_passback")
    out = ask(service, badge, "STA-G2-OUT")
    assert out.allow
    clock[0] = NOW + dt.timedelta(minutes=1)
    with sessions() as s, s.begin():
        assert record_passage(s, site, out.nonce, clock[0]) == "STADIUM-PERIMETER"
    with sessions() as s:
        assert s.get(Occupancy, "STADIUM-CONCOURSE").count == 0  # type: ignore[union-attr]
        assert s.get(Occupancy, "STADIUM-PERIMETER").count == 1  # type: ignore[union-attr]
    assert ask(service, badge, "STA-G2-IN").allow


def test_passage_of_a_denial_or_unknown_nonce_moves_nobody(world, site) -> None:  # type: ignore[no-untyped-def]
    service, sessions, badge, _ = world
    denial = ask(service, badge, "GDN-G1-IN")
    assert not denial.allow
    with sessions() as s, s.begin():
        assert record_passage(s, site, denial.nonce, NOW) is None
        assert record_passage(s, site, "0" * 32, NOW) is None
    with sessions() as s:
        assert s.scalars(select(Position)).all() == []


def test_full_zone_denies_entry(world, site) -> None:  # type: ignore[no-untyped-def]
    service, sessions, badge, _ = world
    with sessions() as s, s.begin():
        s.add(Qualification(holder_id=badge.holder_id, kind="ops_room_clearance", reference="OPS-1", expires_at=None))
        s.add(Occupancy(zone="STADIUM-OPS", count=59))
    assert ask(service, badge, "STA-G6-IN").reason == "granted"
    with sessions() as s, s.begin():
        s.get(Occupancy, "STADIUM-OPS").count = 60  # type: ignore[union-attr]
    answer = ask(service, badge, "STA-G6-IN")
    assert (answer.allow, answer.reason) == (False, "zone_full")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_threat_level_cli(instance) -> None:  # type: ignore[no-untyped-def]
    base = [sys.executable, "-m", "gateway", "threat-level", "--instance", str(instance.folder)]
    shown = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "vigilance"
    switched = subprocess.run(
        [*base, "emergency", "--operator", "lead-7", "--why", "alert"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert switched.stdout.strip() == "threat level vigilance -> emergency"
    assert subprocess.run(base, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip() == "emergency"
    bad = subprocess.run([*base, "panic"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown threat level" in bad.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_threat_level_page_for_leads_only(instance) -> None:  # type: ignore[no-untyped-def]
    from gateway.web import create_app

    app = create_app(instance.folder, {"SESSION_COOKIE_SECURE": False})
    add_operator(instance, "lead9", "lead", "pw-lead9")
    add_operator(instance, "desk9", "desk", "pw-desk9")

    def login(client, user: str, password: str) -> str:  # type: ignore[no-untyped-def]
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True))
        assert token
        client.post("/login", data={"username": user, "password": password, "csrf_token": token.group(1)})
        page = client.get("/threat-level")
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
        return found.group(1) if found else ""

    desk = app.test_client()
    login(desk, "desk9", "pw-desk9")
    assert desk.get("/threat-level").status_code == 403
    assert desk.post("/threat-level", data={"level": "emergency"}).status_code in (400, 403)

    lead = app.test_client()
    token = login(lead, "lead9", "pw-lead9")
    assert lead.post("/threat-level", data={"level": "heightened"}).status_code == 400  # no CSRF token
    response = lead.post(
        "/threat-level", data={"level": "heightened", "why": "drill", "csrf_token": token}, follow_redirects=True
    )
    page = response.get_data(as_text=True)
    assert 'id="current-level">heightened<' in page and "vigilance -&gt; heightened: drill" in page


def test_shifts_recorded_at_the_desk_bound_the_holders_hours(world) -> None:  # type: ignore[no-untyped-def]
    from gateway.db.models import Assignment, Shift

    service, sessions, badge, _ = world  # NOW is a Friday, 20:00 in Paris
    assert ask(service, badge, "STA-G1-IN").reason == "granted"
    with sessions() as s, s.begin():
        s.add(
            Assignment(
                holder_id=badge.holder_id,
                zones="STADIUM-PERIMETER",
                valid_from=NOW - dt.timedelta(days=1),
                valid_until=NOW + dt.timedelta(days=5),
                changed_at=NOW,
                shifts=[Shift(days="fri sat", starts="06:00", ends="14:00")],
            )
        )
    assert ask(service, badge, "STA-G1-IN").reason == "outside_shift"
    with sessions() as s, s.begin():
        s.add(Shift(holder_id=badge.holder_id, days="fri", starts="18:00", ends="24:00"))
    assert ask(service, badge, "STA-G1-IN").reason == "granted"
