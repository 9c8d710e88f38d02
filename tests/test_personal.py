"""Who sees holders' personal details: the rule for each role, and each page that shows holders applying it."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Any

import pytest
from flask.testing import FlaskClient

from gateway import contract, positions
from gateway.cli import add_operator
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import Holder
from gateway.web import create_app
from gateway.web.personal import REMOVED, Disclosure, disclosure
from tests.factories import badged_holder, decision_service

NOW = dt.datetime(2026, 7, 26, 19, 30, tzinfo=dt.UTC)
NAMES = ("desk", "lead", "admin")
PHOTOS = ("desk", "admin")


@pytest.mark.parametrize(
    ("role", "seen"),
    [
        ("desk", Disclosure(names=True, photo=True)),
        ("lead", Disclosure(names=True, photo=False)),
        ("admin", Disclosure(names=True, photo=True)),
        ("guard", Disclosure(names=False, photo=False)),  # a role the rule does not know sees the id only
        (None, Disclosure(names=False, photo=False)),
    ],
)
def test_the_rule_for_each_role(role: str | None, seen: Disclosure) -> None:
    assert disclosure(role, NAMES, PHOTOS) == seen


def test_a_photo_right_does_not_imply_names() -> None:
    assert disclosure("lead", (), ("lead",)) == Disclosure(names=False, photo=True)


@pytest.fixture
def world(instance, site):  # type: ignore[no-untyped-def]
    """Chloe Lefevre (with a photo) inside the stadium's operations room, after a granted decision."""
    badge = badged_holder(instance, site, ["STADIUM-PERIMETER"], NOW, name=("Lefevre", "Chloe"))
    decision_service(instance, site, lambda: NOW).answer(
        contract.DecisionRequest("STA-G1-IN", secrets.token_hex(16), badge.token, 0)
    )
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s, s.begin():
        h = s.get(Holder, badge.holder_id)
        assert h is not None
        h.photo, h.photo_type = b"\xff\xd8 a photo", "image/jpeg"
        positions.move(s, h.id, "STADIUM-OPS", "STA-G6", NOW)
    for role in NAMES:
        add_operator(instance, f"{role}1", role, f"pw-{role}1")
    return instance, sessions, badge.holder_id


def _client(instance, role: str, config: dict[str, Any] | None = None) -> FlaskClient:  # type: ignore[no-untyped-def]
    app = create_app(instance.folder, {"SESSION_COOKIE_SECURE": False, "MONITOR_STREAM_SECONDS": 1, **(config or {})})
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True))
    assert token
    data = {"username": f"{role}1", "password": f"pw-{role}1", "csrf_token": token.group(1)}
    assert client.post("/login", data=data).status_code == 302
    return client


def _shows(page: str, holder_id: str) -> tuple[bool, bool, bool]:
    """(name shown, photo shown, holder id shown)."""
    return "LEFEVRE Chloe" in page or "Lefevre" in page, f"/desk/holders/{holder_id}/photo" in page, holder_id in page


@pytest.mark.parametrize(
    ("role", "config", "expected"),
    [
        ("lead", {}, (True, False)),
        ("admin", {}, (True, True)),
        ("lead", {"PHOTO_ROLES": ("desk", "lead", "admin")}, (True, True)),
        ("lead", {"NAME_ROLES": ("desk", "admin")}, (False, False)),
    ],
)
def test_the_muster_page_shows_what_the_role_may_see(world, role: str, config: dict[str, Any], expected) -> None:  # type: ignore[no-untyped-def]
    instance, _, holder_id = world
    page = _client(instance, role, config).get("/muster").get_data(as_text=True)
    names, photo, by_id = _shows(page.split('id="zone-STADIUM-OPS"')[1].split("</section>")[0], holder_id)
    assert (names, photo) == expected
    assert names or by_id  # without the name right the holder is still counted and named by id


def test_the_muster_page_is_refused_to_desk_staff(world) -> None:  # type: ignore[no-untyped-def]
    instance, _, _ = world
    assert _client(instance, "desk").get("/muster").status_code == 403


@pytest.mark.parametrize("role", NAMES)
@pytest.mark.parametrize("config", [{}, {"NAME_ROLES": (), "PHOTO_ROLES": ()}])
def test_the_decisions_page_never_shows_more_than_the_rule(world, role: str, config: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    instance, _, holder_id = world
    client = _client(instance, role, config)
    page = client.get("/").get_data(as_text=True)
    assert client.get("/").status_code == 200
    seen = disclosure(role, config.get("NAME_ROLES", NAMES), config.get("PHOTO_ROLES", PHOTOS))
    names, photo, _ = _shows(page, holder_id)
    assert (not names or seen.names) and (not photo or seen.photo)


@pytest.mark.parametrize(("config", "named"), [({}, True), ({"NAME_ROLES": ("desk", "admin")}, False)])
def test_the_live_monitor_names_holders_only_with_the_name_right(world, config: dict[str, Any], named: bool) -> None:  # type: ignore[no-untyped-def]
    instance, _, holder_id = world
    client = _client(instance, "lead", config)
    feed = client.get("/monitor").get_data(as_text=True).split('id="feed"')[1]
    assert ("LEFEVRE Chloe" in feed) is named
    assert (holder_id in feed) is not named
    stream = client.get("/monitor/stream?after=0").get_data(as_text=True)
    assert ("LEFEVRE Chloe" in stream) is named


@pytest.mark.parametrize(("role", "status"), [("desk", 200), ("admin", 200), ("lead", 403)])
def test_the_photo_itself_is_served_only_with_the_photo_right(world, role: str, status: int) -> None:  # type: ignore[no-untyped-def]
    instance, _, holder_id = world
    assert _client(instance, role).get(f"/desk/holders/{holder_id}/photo").status_code == status


def test_a_holder_whose_data_was_removed_is_shown_as_such(world) -> None:  # type: ignore[no-untyped-def]
    from gateway import retention

    instance, sessions, holder_id = world
    with sessions() as s, s.begin():
        report = retention.run(s, bytes(32), NOW + dt.timedelta(days=40), 30, "lead1")
    assert [d.holder_id for d in report.removed] == [holder_id]
    client = _client(instance, "admin")
    muster = client.get("/muster").get_data(as_text=True)
    assert f"{REMOVED} {holder_id}" in muster and "/photo" not in muster and "Lefevre" not in muster
    assert "Lefevre" not in client.get("/monitor").get_data(as_text=True)
