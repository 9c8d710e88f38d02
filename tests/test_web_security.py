"""Web hardening: cross-site POSTs, cookie flags, password guessing, oversized bodies, non-image photos."""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from gateway import photos
from gateway.cli import add_operator
from gateway.db.models import AuditEntry
from gateway.rate_limit import LOGIN_LOCKOUT_S, LOGIN_MAX_FAILURES, LoginThrottle
from gateway.web import create_app
from tests.factories import badged_holder

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the web logic is not database-bound

T0 = dt.datetime(2026, 7, 26, 8, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(instance, clock: Clock) -> Flask:  # type: ignore[no-untyped-def]
    app = create_app(instance.folder, {"SESSION_COOKIE_SECURE": False})
    app.extensions["accessgw"].now = clock  # the login throttle's time
    return app


def _csrf(client: FlaskClient, path: str = "/login") -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match
    return match.group(1)


def _try(client: FlaskClient, username: str, password: str, address: str = "192.0.2.10") -> int:
    data = {"username": username, "password": password, "csrf_token": _csrf(client)}
    return client.post("/login", data=data, environ_base={"REMOTE_ADDR": address}).status_code


def _audit(app: Flask, kind: str) -> list[AuditEntry]:
    with app.extensions["accessgw"].sessions() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.kind == kind).order_by(AuditEntry.seq)))


# --- CSRF and cookies -------------------------------------------------------------------------------------


@SQLITE
def test_cross_site_post_without_token_is_refused_and_changes_nothing(app: Flask, instance, site) -> None:  # type: ignore[no-untyped-def]
    badge = badged_holder(instance, site, ["STADIUM-PERIMETER"], dt.datetime.now(dt.UTC))
    add_operator(instance, "clerk", "desk", "pw-clerk-1")
    client = app.test_client()
    assert _try(client, "clerk", "pw-clerk-1") == 302
    # What a hostile page's auto-submitting form sends along with the victim's cookie: no token, foreign origin.
    forged = client.post(
        f"/desk/badges/{badge.id}/revoke",
        data={"reason": "forged"},
        headers={"Origin": "https://evil.example", "Referer": "https://evil.example/x"},
    )
    assert forged.status_code == 400
    assert _audit(app, "badge_revoked") == []
    # Control: the same POST from the page itself, with its token, does revoke.
    token = _csrf(client, f"/desk/badges/{badge.id}")
    genuine = client.post(f"/desk/badges/{badge.id}/revoke", data={"reason": "lost", "csrf_token": token})
    assert genuine.status_code in (302, 303)
    assert len(_audit(app, "badge_revoked")) == 1


@SQLITE
def test_session_cookie_is_sent_secure_httponly_samesite(instance) -> None:  # type: ignore[no-untyped-def]
    app = create_app(instance.folder)  # the production settings
    add_operator(instance, "lead9", "lead", "pw-lead9-x")
    client = app.test_client()
    response = client.post("/login", data={"username": "lead9", "password": "pw-lead9-x", "csrf_token": _csrf(client)})
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert cookies, response.headers
    flags = {part.strip().split("=")[0].lower() for part in cookies[-1].split(";")}
    assert {"secure", "httponly", "samesite"} <= flags
    assert "samesite=lax" in cookies[-1].lower()


# --- password guessing ------------------------------------------------------------------------------------


@SQLITE
def test_repeated_wrong_passwords_lock_the_pair_out_and_are_audited(app: Flask, instance, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    add_operator(instance, "clerk2", "desk", "right-password-2")
    client = app.test_client()
    for _ in range(LOGIN_MAX_FAILURES):
        assert _try(client, "clerk2", "guess") == 401
    [lockout] = _audit(app, "operator_lockout")
    assert (lockout.operator, lockout.allow, lockout.reason) == ("clerk2", False, "too_many_failures")
    assert "192.0.2.10" in lockout.detail
    # Locked: even the right password is refused, without being checked, and the refusal is logged.
    assert _try(client, "clerk2", "right-password-2") == 429
    assert _audit(app, "operator_login")[-1].detail.startswith("locked out")
    # Only that pair: the operator from the desk's own address, and other names from the guesser's, still log in.
    assert _try(app.test_client(), "clerk2", "right-password-2", address="192.0.2.99") == 302
    add_operator(instance, "clerk3", "desk", "right-password-3")
    assert _try(app.test_client(), "clerk3", "right-password-3") == 302
    # When the lockout ends the right password works again.
    clock.now = T0 + dt.timedelta(seconds=LOGIN_LOCKOUT_S + 1)
    assert _try(app.test_client(), "clerk2", "right-password-2") == 302
    assert len(_audit(app, "operator_lockout")) == 1


@SQLITE
def test_a_success_clears_the_count(app: Flask, instance) -> None:  # type: ignore[no-untyped-def]
    add_operator(instance, "clerk4", "desk", "right-password-4")
    for _ in range(LOGIN_MAX_FAILURES - 1):
        assert _try(app.test_client(), "clerk4", "typo") == 401
    assert _try(app.test_client(), "clerk4", "right-password-4") == 302
    for _ in range(LOGIN_MAX_FAILURES - 1):
        assert _try(app.test_client(), "clerk4", "typo") == 401
    assert _audit(app, "operator_lockout") == []


def test_login_throttle_rules() -> None:
    throttle = LoginThrottle(max_failures=3, window_s=60, lockout_s=30)
    key = LoginThrottle.key(" Clerk ", "10.0.0.1")
    assert key == LoginThrottle.key("clerk", "10.0.0.1")  # the name as typed: case and spaces do not matter
    # Failures spread wider than the window never add up to a lockout.
    assert not throttle.failed(key, 0) and not throttle.failed(key, 50)
    assert not throttle.failed(key, 100)  # the one at 0 s has left the window
    assert throttle.failed(key, 101)  # 50, 100, 101: three within a minute
    assert throttle.locked_for(key, 101) == 30
    assert throttle.locked_for(key, 130.5) == 0.5
    assert throttle.locked_for(key, 131) == 0
    assert throttle.locked_for(LoginThrottle.key("clerk", "10.0.0.2"), 120) == 0


# --- oversized bodies and hostile uploads --------------------------------------------------------------------


@SQLITE
def test_body_beyond_max_content_length_is_refused(app: Flask, instance) -> None:  # type: ignore[no-untyped-def]
    add_operator(instance, "clerk5", "desk", "pw-clerk-5")
    client = app.test_client()
    assert _try(client, "clerk5", "pw-clerk-5") == 302
    limit = app.config["MAX_CONTENT_LENGTH"]
    big = io.BytesIO(b"a" * (limit + 1))
    response = client.post(
        "/desk/import", data={"file": (big, "huge.csv"), "csrf_token": _csrf(client, "/desk/import")}
    )
    assert response.status_code == 413
    from gateway import operators

    with app.extensions["accessgw"].sessions() as s, s.begin():
        op = operators.find(s, "clerk5")
        assert op is not None
        token, _ = operators.new_api_token(s, op, "t", dt.datetime.now(dt.UTC))
    api = app.test_client().post(
        "/api/v1/organisations",
        data=b"{" + b" " * (limit + 1) + b"}",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert api.status_code == 413 and api.get_json()["error"] == "too_large"


@SQLITE
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"<?php system($_GET['c']); ?>", id="script"),
        pytest.param(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj", id="pdf"),
        pytest.param(b"GIF89a" + bytes(100), id="gif"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", id="svg"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(40), id="truncated-png"),
        pytest.param(b"\xff\xd8\xff\xe0" + bytes(40), id="truncated-jpeg"),
    ],
)
def test_a_non_image_photo_is_refused(app: Flask, instance, site, data: bytes) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(photos.PhotoError):
        photos.prepare(data)
    badge = badged_holder(instance, site, ["STADIUM-PERIMETER"], dt.datetime.now(dt.UTC))
    add_operator(instance, "clerk6", "desk", "pw-clerk-6")
    client = app.test_client()
    assert _try(client, "clerk6", "pw-clerk-6") == 302
    token = _csrf(client, f"/desk/holders/{badge.holder_id}")
    response = client.post(
        f"/desk/holders/{badge.holder_id}/photo",
        data={"photo": (io.BytesIO(data), "photo.jpg"), "csrf_token": token},
        follow_redirects=True,
    )
    assert "photo: " in response.get_data(as_text=True)  # the clerk is told why
    with app.extensions["accessgw"].sessions() as s:
        from gateway.db.models import Holder

        holder = s.get(Holder, badge.holder_id)
        assert holder is not None and holder.photo is None
