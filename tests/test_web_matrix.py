"""Every web route against every kind of caller: what is not granted answers 403 or sends to the login page.

The routes come from the app's own url_map, so a route added later is tested too; the expected grants come
from GRANTS below, an explicit table, and a route missing from it fails the test (fill it in for new routes).
Each GET is also checked to leave every table's row count (the audit included) as it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import MetaData, func, select
from werkzeug.routing import Rule

from gateway import operators
from gateway.cli import add_operator
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import Operator
from gateway.web import create_app
from tests.factories import badged_holder

# Callers: an operator of each role logged in with the session cookie, the same operators through an API token,
# a reader device (its broker password sent as a bearer token: it has no web account) and nobody.
SESSIONS = ("desk", "lead", "admin")
TOKENS = ("desk_token", "lead_token", "admin_token")
CALLERS = (*SESSIONS, *TOKENS, "reader_device", "anonymous")
EVERYONE = frozenset(CALLERS)


def pages(*roles: str) -> frozenset[str]:
    """A page for these roles (administrators pass every role check); tokens never open pages."""
    return frozenset({*roles, "admin"})


def api(*roles: str) -> frozenset[str]:
    """A JSON API operation for these roles, through an API token only (administrators pass every check)."""
    return frozenset({f"{r}_token" for r in (*roles, "admin")})


ANY_ROLE = ("desk", "lead", "admin")

# "METHOD endpoint" -> who is let in. The one table to extend when a route is added.
GRANTS: dict[str, frozenset[str]] = {
    "GET static": EVERYONE,
    "GET keys.jwks": EVERYONE,
    "GET keys.healthz": EVERYONE,
    "GET auth.login": EVERYONE,
    "POST auth.login": EVERYONE,
    "POST auth.logout": EVERYONE,
    "GET api.openapi_document": EVERYONE,
    "GET oversight.index": pages("desk", "lead"),
    "GET oversight.api_decisions": pages("lead") | api("lead"),  # the cookie works here as well as a token
    "GET muster.muster": pages("lead"),
    "GET operations.operations": pages("lead"),
    "GET health.readyz": EVERYONE,  # for load balancers: says which part is missing, nothing more
    "GET health.metrics": api("lead"),  # Prometheus, with a lead's or an administrator's API token
    "GET threat.show": pages("lead"),
    "POST threat.switch": pages("lead"),
    "GET admin.operators": pages(),
    "POST admin.create_operator": pages(),
    "POST admin.set_active": pages(),
    "GET admin.keys": pages(),
    "POST admin.rotate": pages(),
    "POST admin.retire": pages(),
    "GET admin.site": pages(),
    "GET admin.tokens": pages(*ANY_ROLE),
    "POST admin.create_token": pages(*ANY_ROLE),
    "POST admin.revoke_token": pages(*ANY_ROLE),
    "GET desk.holders": pages("desk", "lead"),
    "GET desk.holder": pages("desk", "lead"),
    "GET desk.photo": pages("desk"),  # PHOTO_ROLES: leads see no photos
    "POST desk.upload_photo": pages("desk"),
    "GET desk.new_holder": pages("desk"),
    "POST desk.new_holder": pages("desk"),
    "GET desk.edit_holder": pages("desk"),
    "POST desk.edit_holder": pages("desk"),
    "POST desk.suspend": pages("desk"),
    "POST desk.reinstate": pages("desk"),
    "GET desk.issue": pages("desk"),
    "POST desk.issue": pages("desk"),
    "GET desk.badge": pages("desk"),
    "GET desk.card_pdf": pages("desk"),
    "GET desk.card_png": pages("desk"),
    "POST desk.revoke": pages("desk"),
    "POST desk.reissue": pages("desk"),
    "GET desk.organisations": pages("desk"),
    "POST desk.create_organisation": pages("desk"),
    "POST desk.issue_organisation": pages("desk"),
    "GET desk.organisation_cards": pages("desk"),
    "GET desk_import.start": pages("desk"),
    "POST desk_import.upload": pages("desk"),
    "GET desk_import.show": pages("desk"),
    "GET desk_import.progress": pages("desk"),
    "POST desk_import.good_rows": pages("desk"),
    # Leads' oversight (engineer C) and live monitor (engineer D):
    "GET oversight.search": pages("lead"),
    "GET oversight.trail": pages("lead"),
    "GET oversight.traffic": pages("lead"),
    "GET oversight.gate_traffic": pages("lead"),
    "POST oversight.export": pages("lead"),  # a POST: each export is audited
    "GET oversight.dashboard": pages("lead"),
    "GET monitor.page": pages("lead"),
    "GET monitor.script": pages("lead"),
    "GET monitor.stream": pages("lead"),
    "POST monitor.acknowledge": pages("lead"),
    "GET api.list_organisations": api("desk", "lead"),
    "POST api.create_organisation": api("desk"),
    "GET api.list_holders": api("desk", "lead"),
    "POST api.create_holder": api("desk"),
    "GET api.get_holder": api("desk", "lead"),
    "PATCH api.patch_holder": api("desk"),
    "POST api.suspend_holder": api("desk"),
    "POST api.reinstate_holder": api("desk"),
    "GET api.get_photo": api("desk"),  # PHOTO_ROLES
    "PUT api.put_photo": api("desk"),
    "POST api.issue_badge": api("desk"),
    "GET api.get_badge": api("desk", "lead"),
    "POST api.revoke_badge": api("desk"),
    "POST api.reissue_badge": api("desk"),
    "GET api.badge_card": api("desk"),
    "POST api.issue_contingent": api("desk"),
    "GET api.contingent_cards": api("desk"),
    "POST api.import_csv": api("desk"),
}


@dataclass
class World:
    app: Flask
    clients: dict[str, FlaskClient]
    headers: dict[str, dict[str, str]]
    passwords: dict[str, str]
    args: dict[str, str]


def _csrf(client: FlaskClient, path: str = "/login") -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def _login(client: FlaskClient, username: str, password: str) -> None:
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": _csrf(client)})
    assert response.status_code == 302, response.status_code


@pytest.fixture
def world(instance, site, broker) -> Iterator[World]:  # type: ignore[no-untyped-def]
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    badge = badged_holder(instance, site, ["STADIUM-PERIMETER"], now)
    app = create_app(instance.folder, {"SESSION_COOKIE_SECURE": False})
    passwords = {role: add_operator(instance, f"m-{role}", role, f"pw-{role}-matrix") for role in SESSIONS}
    add_operator(instance, "m-spare", "desk", "pw-spare-matrix")  # the one the admin may switch off
    sessions = session_factory(make_engine(instance.settings.database_url))
    headers: dict[str, dict[str, str]] = {c: {} for c in CALLERS}
    with sessions() as s, s.begin():
        for role in SESSIONS:
            op = operators.find(s, f"m-{role}")
            assert op is not None
            token, _ = operators.new_api_token(s, op, "matrix", now)
            headers[f"{role}_token"] = {"Authorization": f"Bearer {token}"}
        spare = s.scalar(select(Operator.id).where(Operator.username == "m-spare"))
    headers["reader_device"] = {"Authorization": f"Bearer {broker.password('STA-G1-IN')}"}
    clients = {c: app.test_client() for c in CALLERS}
    for role in SESSIONS:
        _login(clients[role], f"m-{role}", passwords[role])
    args = {
        "holder_id": badge.holder_id,
        "badge_id": badge.id,
        "code": "TEST-ORG",
        "kid": "NOPE",
        "operator_id": str(spare),
        "token_id": "999999",
        "job_id": "no-such-job",
        "filename": "style.css",
        "gate": "STA-G1",
        "fmt": "csv",
    }
    yield World(app, clients, headers, passwords, args)


def _path(rule: Rule, args: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        converter, name = match.group(1), match.group(2)
        if name in args:
            return args[name]
        return "999999" if converter == "int" else "no-such-thing"

    return re.sub(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>", value, rule.rule)


def _routes(app: Flask) -> list[tuple[str, str, str]]:
    """(method, endpoint, path template) of every route the app serves."""
    return sorted(
        (method, rule.endpoint, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    )


def _row_counts(app: Flask) -> dict[str, int]:
    engine = app.extensions["accessgw"].engine
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {
            name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in meta.tables.items()
        }


def _refused(caller: str, method: str, path: str, status: int, location: str) -> bool:
    """403 for a known caller without the role; 401 (API) or the login page for a caller the area does not know;
    and a page POST from a caller without a session fails the CSRF check (400) before anything else runs."""
    if status == 403:
        return True
    if path.startswith("/api/") or path == "/metrics":  # scripts' areas: no login page, a 401
        return status == 401
    if method != "GET" and caller not in SESSIONS and status == 400:
        return True
    return status == 302 and "/login" in location


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_route_answers_every_caller_as_the_table_says(world: World) -> None:
    routes = _routes(world.app)
    missing = sorted({f"{m} {e}" for m, e, _ in routes} - set(GRANTS))
    assert not missing, f"routes absent from GRANTS in tests/test_web_matrix.py (say who may use them): {missing}"
    stale = sorted(set(GRANTS) - {f"{m} {e}" for m, e, _ in routes})
    assert not stale, f"GRANTS names routes the app no longer has: {stale}"

    rules = {(m, r.endpoint): r for r in world.app.url_map.iter_rules() for m in r.methods or ()}
    wrong: list[str] = []
    changed_by_get: list[str] = []
    checked = 0
    tokens: dict[str, str] = {}
    # State-changing calls go last, logout at the very end: the reads see the world as the fixture made it.
    order = sorted(routes, key=lambda r: (r[0] != "GET", r[1] == "auth.logout", r[1]))
    for method, endpoint, _ in order:
        path = _path(rules[(method, endpoint)], world.args)
        for caller in CALLERS:
            client = world.clients[caller]
            data: dict[str, str] = {}
            if method != "GET" and caller in SESSIONS:
                if caller not in tokens:  # a real form's token (valid for the session): CSRF is not tested here
                    tokens[caller] = _csrf(client, "/admin/tokens")
                data["csrf_token"] = tokens[caller]
            before = _row_counts(world.app) if method == "GET" else None
            response = client.open(path, method=method, headers=world.headers[caller], data=data)
            response.close()  # a stream (the live monitor) is not read to its end, but its transaction ends here
            checked += 1
            location = response.headers.get("Location", "")
            grant = GRANTS[f"{method} {endpoint}"]
            granted = caller in grant
            refused = _refused(caller, method, path, response.status_code, location)
            if grant == EVERYONE:  # public: only a 403 would be wrong (an empty login form earns its 401)
                refused = response.status_code == 403
            if response.status_code == 500:  # a crash (503 is /readyz saying a part is missing)
                wrong.append(f"{method} {path} as {caller}: server error {response.status_code}")
            elif granted == refused:
                wrong.append(f"{method} {path} as {caller}: {response.status_code} {location}".strip())
            if before is not None and _row_counts(world.app) != before:
                changed_by_get.append(f"GET {path} as {caller}")
            if endpoint == "auth.logout" and caller in SESSIONS:
                _login(client, f"m-{caller}", world.passwords[caller])
                tokens.pop(caller, None)
    assert not wrong, "\n".join(wrong)
    assert not changed_by_get, f"GET requests that changed the database: {changed_by_get}"
    assert checked == len(routes) * len(CALLERS)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_route_missing_from_the_table_is_noticed(instance) -> None:  # type: ignore[no-untyped-def]
    """The table check above is not vacuous: a route added to the app shows up as missing."""
    app = create_app(instance.folder)
    app.add_url_rule("/matrix-probe", "matrix_probe", lambda: "x")
    assert {f"{m} {e}" for m, e, _ in _routes(app)} - set(GRANTS) == {"GET matrix_probe"}
