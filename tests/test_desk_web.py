"""The desk's pages and JSON API through Flask's test client: roles checked on the server for every page and
endpoint, CSRF, logins audited, photos only for roles allowed, the import's progress, and an OpenAPI document
that lists exactly the routes there are and whose schemas the real answers fit."""

from __future__ import annotations

import io
import re
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import select

from gateway import operators
from gateway.cli import add_operator
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.web import create_app

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PASSWORDS = {"desk1": "desk-password-1", "lead1": "lead-password-1", "admin1": "admin-password-1"}


@pytest.fixture
def app(instance) -> Flask:  # type: ignore[no-untyped-def]
    for user, role in (("desk1", "desk"), ("lead1", "lead"), ("admin1", "admin")):
        add_operator(instance, user, role, PASSWORDS[user])
    return create_app(instance.folder, {"SESSION_COOKIE_SECURE": False})


def csrf(client: FlaskClient, path: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(app: Flask, user: str) -> FlaskClient:
    client = app.test_client()
    response = client.post(
        "/login", data={"username": user, "password": PASSWORDS[user], "csrf_token": csrf(client, "/login")}
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return client


def png_photo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (600, 800), (150, 170, 190)).save(out, "PNG")
    return out.getvalue()


def make_org(client: FlaskClient, code: str = "GN-75") -> None:
    token = csrf(client, "/desk/organisations")
    client.post(
        "/desk/organisations",
        data={"code": code, "name": "Gendarmerie Paris", "kind": "gendarmerie", "country": "FR", "csrf_token": token},
    )


def register(client: FlaskClient, **changes: Any) -> str:
    data: dict[str, Any] = {
        "organisation": "GN-75",
        "family_name": "Martin",
        "given_name": "Léa",
        "country": "FR",
        "role": "gendarme",
        "zones": ["STADIUM-PERIMETER", "STADIUM-CONCOURSE"],
        "first_day": "2030-07-20",
        "last_day": "2030-08-11",
        "shifts": "mon-fri 06:00-14:00",
        "photo": (io.BytesIO(png_photo()), "lea.png"),
        **changes,
    }
    data["csrf_token"] = csrf(client, "/desk/holders/new")
    response = client.post("/desk/holders/new", data=data, content_type="multipart/form-data")
    assert response.status_code == 302, response.get_data(as_text=True)[-2000:]
    return response.headers["Location"].rsplit("/", 1)[1]


def issue(client: FlaskClient, holder_id: str) -> str:
    token = csrf(client, f"/desk/holders/{holder_id}/issue")
    response = client.post(f"/desk/holders/{holder_id}/issue", data={"csrf_token": token})
    assert response.status_code == 302 and "/desk/badges/" in response.headers["Location"]
    return response.headers["Location"].rsplit("/", 1)[1]


# --- roles on every page and endpoint ------------------------------------------------------------------

DESK_ONLY = [
    ("GET", "/desk/holders/new"),
    ("POST", "/desk/holders/new"),
    ("GET", "/desk/holders/{h}/edit"),
    ("POST", "/desk/holders/{h}/edit"),
    ("POST", "/desk/holders/{h}/photo"),
    ("POST", "/desk/holders/{h}/suspend"),
    ("POST", "/desk/holders/{h}/reinstate"),
    ("GET", "/desk/holders/{h}/issue"),
    ("POST", "/desk/holders/{h}/issue"),
    ("GET", "/desk/badges/{b}"),
    ("GET", "/desk/badges/{b}/card.pdf"),
    ("GET", "/desk/badges/{b}/card.png"),
    ("POST", "/desk/badges/{b}/revoke"),
    ("POST", "/desk/badges/{b}/reissue"),
    ("GET", "/desk/organisations"),
    ("POST", "/desk/organisations"),
    ("POST", "/desk/organisations/GN-75/issue"),
    ("GET", "/desk/organisations/GN-75/cards.pdf"),
    ("GET", "/desk/import"),
    ("POST", "/desk/import"),
]
ADMIN_ONLY = [
    ("GET", "/admin/operators"),
    ("POST", "/admin/operators"),
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys/rotate"),
    ("GET", "/admin/site"),
]
EVERY_PAGE = [*DESK_ONLY, *ADMIN_ONLY, ("GET", "/desk/holders"), ("GET", "/desk/holders/{h}"), ("GET", "/admin/tokens")]


@pytest.fixture
def records(app: Flask) -> dict[str, str]:
    desk = login(app, "desk1")
    make_org(desk)
    holder_id = register(desk)
    return {"h": holder_id, "b": issue(desk, holder_id)}


def _send(client: FlaskClient, method: str, path: str, token: str | None) -> Any:
    data = {"csrf_token": token} if token else {}
    return client.open(path, method=method, data=data)


def test_a_lead_cannot_reach_desk_pages(app: Flask, records: dict[str, str]) -> None:
    lead = login(app, "lead1")
    token = csrf(lead, "/desk/holders")
    answers = {(m, p): _send(lead, m, p.format(**records), token).status_code for m, p in DESK_ONLY}
    assert answers == dict.fromkeys(answers, 403)


def test_desk_staff_cannot_reach_admin_pages(app: Flask, records: dict[str, str]) -> None:
    desk = login(app, "desk1")
    token = csrf(desk, "/desk/holders")
    answers = {(m, p): _send(desk, m, p.format(**records), token).status_code for m, p in ADMIN_ONLY}
    assert answers == dict.fromkeys(answers, 403)


def test_a_logged_out_visitor_reaches_nothing(app: Flask, records: dict[str, str]) -> None:
    visitor = app.test_client()
    for method, path in EVERY_PAGE:
        response = visitor.open(path.format(**records), method=method)
        # a GET is sent to the login page; a POST without a session is refused by CSRF before anything happens
        if method == "GET":
            assert response.status_code == 302 and response.headers["Location"].startswith("/login"), path
        else:
            assert response.status_code == 400, path
    assert "MARTIN" not in visitor.get(f"/desk/holders/{records['h']}", follow_redirects=True).get_data(as_text=True)


def test_a_lead_may_look_a_holder_up_but_sees_no_photo_and_no_actions(app: Flask, records: dict[str, str]) -> None:
    lead = login(app, "lead1")
    page = lead.get(f"/desk/holders/{records['h']}").get_data(as_text=True)
    assert "MARTIN" in page and "holder-photo" not in page and "Issue a badge" not in page
    assert lead.get(f"/desk/holders/{records['h']}/photo").status_code == 403
    desk = login(app, "desk1")
    photo = desk.get(f"/desk/holders/{records['h']}/photo")
    assert photo.status_code == 200 and photo.mimetype == "image/jpeg"
    assert photo.headers["Cache-Control"] == "private, no-store"


def test_a_form_without_its_csrf_token_is_refused(app: Flask) -> None:
    desk = login(app, "desk1")
    response = desk.post("/desk/organisations", data={"code": "X", "name": "X", "kind": "police", "country": "FR"})
    assert response.status_code == 400 and "CSRF" in response.get_data(as_text=True)


def test_logins_are_audited_failed_ones_too(app: Flask, instance) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    client.post("/login", data={"username": "desk1", "password": "nope", "csrf_token": csrf(client, "/login")})
    login(app, "desk1")
    with session_factory(make_engine(instance.settings.database_url))() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.kind == "operator_login").order_by(AuditEntry.seq)).all()
    assert [(r.operator, r.allow) for r in rows] == [("desk1", False), ("desk1", True)]


# --- the desk's work ---------------------------------------------------------------------------------


def test_bad_input_is_shown_and_nothing_is_saved(app: Flask) -> None:
    desk = login(app, "desk1")
    make_org(desk)
    data = {
        "organisation": "GN-75",
        "family_name": "Martin",
        "given_name": "",
        "country": "XX",
        "role": "gendarme",
        "photo": (io.BytesIO(b"GIF89a not really"), "lea.gif"),
        "csrf_token": csrf(desk, "/desk/holders/new"),
    }
    response = desk.post("/desk/holders/new", data=data, content_type="multipart/form-data")
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "given name is required" in page and "not an ISO 3166" in page and "only JPEG or PNG" in page
    assert 'value="Martin"' in page  # what was typed is kept
    assert "No holder matches." in desk.get("/desk/holders").get_data(as_text=True)


def test_issue_preview_download_and_revoke(app: Flask, records: dict[str, str]) -> None:
    desk = login(app, "desk1")
    page = desk.get(f"/desk/badges/{records['b']}").get_data(as_text=True)
    assert "version 12 at level M" in page or re.search(r"version (\d+) at level M", page)
    pdf = desk.get(f"/desk/badges/{records['b']}/card.pdf")
    assert (
        pdf.status_code == 200 and pdf.data.startswith(b"%PDF") and "attachment" in pdf.headers["Content-Disposition"]
    )
    preview = desk.get(f"/desk/badges/{records['b']}/card.png")
    assert preview.status_code == 200 and preview.data.startswith(b"\x89PNG")
    token = csrf(desk, f"/desk/badges/{records['b']}")
    desk.post(f"/desk/badges/{records['b']}/revoke", data={"reason": "stolen", "csrf_token": token})
    assert 'id="badge-state">revoked' in desk.get(f"/desk/badges/{records['b']}").get_data(as_text=True)
    assert desk.get(f"/desk/badges/{records['b']}/card.pdf").status_code == 409


def test_import_page_shows_progress_and_every_bad_line(app: Flask) -> None:
    desk = login(app, "desk1")
    make_org(desk)
    rows = "".join(f"Name{i},Given,gendarme,FR,R{i}\n" for i in range(40))
    csv = "family_name,given_name,role,country,reference\n" + rows + "Bad,Row,plumber,FR,RX\nOther,Bad,gendarme,QQ,RY\n"
    response = desk.post(
        "/desk/import",
        data={
            "organisation": "GN-75",
            "file": (io.BytesIO(csv.encode()), "gn.csv"),
            "csrf_token": csrf(desk, "/desk/import"),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    job_page = response.headers["Location"]
    state = _wait(desk, job_page)
    assert (state["stage"], state["imported"], state["bad_rows"], state["good_rows"]) == ("refused", 0, 2, 40)
    page = desk.get(job_page).get_data(as_text=True)
    assert "<td>42</td><td>unknown role &#39;plumber&#39;" in page and "<td>43</td>" in page
    assert "<progress" in page
    good = desk.post(f"{job_page}/good-rows", data={"csrf_token": csrf(desk, job_page)})
    state = _wait(desk, good.headers["Location"])
    assert (state["stage"], state["imported"]) == ("done", 40)


def _wait(client: FlaskClient, job_page: str) -> dict[str, Any]:
    for _ in range(200):
        state: dict[str, Any] = client.get(f"{job_page}/progress").get_json()
        if state["finished"]:
            return state
        time.sleep(0.05)
    raise AssertionError("the import never finished")


# --- the JSON API ------------------------------------------------------------------------------------


def api_token(instance, user: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    import datetime as dt

    with session_factory(make_engine(instance.settings.database_url))() as s, s.begin():
        token, _ = operators.new_api_token(s, operators.find(s, user), "test", dt.datetime.now(dt.UTC))  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {token}"}


def test_api_needs_a_token_and_never_takes_the_session_cookie(app: Flask, instance) -> None:  # type: ignore[no-untyped-def]
    desk = login(app, "desk1")
    assert desk.get("/api/v1/holders").status_code == 401
    assert desk.post("/api/v1/organisations", json={"code": "A"}).status_code == 401
    bad = app.test_client().get("/api/v1/holders", headers={"Authorization": "Bearer agw_not-a-token"})
    assert bad.status_code == 401 and bad.get_json()["error"] == "unauthorized"


def test_api_roles_are_checked_on_every_endpoint(app: Flask, instance, records: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    lead = app.test_client()
    headers = api_token(instance, "lead1")
    assert lead.get("/api/v1/holders", headers=headers).status_code == 200
    for method, path in [
        ("POST", "/api/v1/holders"),
        ("POST", f"/api/v1/holders/{records['h']}/badges"),
        ("POST", f"/api/v1/badges/{records['b']}/revoke"),
        ("GET", f"/api/v1/badges/{records['b']}/card.pdf"),
        ("POST", "/api/v1/organisations/GN-75/import"),
        ("GET", f"/api/v1/holders/{records['h']}/photo"),
    ]:
        response = lead.open(path, method=method, headers=headers, json={})
        assert response.status_code == 403, (method, path)
    assert "token" not in lead.get(f"/api/v1/badges/{records['b']}", headers=headers).get_json()


def test_openapi_lists_exactly_the_api_routes(app: Flask) -> None:
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    routed: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            routed.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    documented = {path: set(ops) for path, ops in spec["paths"].items()}
    assert documented == routed


def test_api_answers_fit_the_openapi_schemas(app: Flask, instance) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    spec = client.get("/api/v1/openapi.json").get_json()
    h = api_token(instance, "desk1")

    def call(method: str, path: str, template: str, **kwargs: Any) -> Any:
        response = client.open(path, method=method, headers=h, **kwargs)
        op = spec["paths"][template][method.lower()]
        declared = op["responses"].get(str(response.status_code))
        assert declared is not None, f"{method} {template} answered {response.status_code}, not documented"
        media, content = next(iter(declared["content"].items()))
        assert response.mimetype == media, (template, response.mimetype)
        if media == "application/json":
            conform(response.get_json(), content["schema"], spec, f"{method} {template}")
        return response

    call(
        "POST",
        "/api/v1/organisations",
        "/api/v1/organisations",
        json={"code": "BPOL", "name": "Bundespolizei", "kind": "police", "country": "DE"},
    )
    call("GET", "/api/v1/organisations", "/api/v1/organisations")
    holder = call(
        "POST",
        "/api/v1/holders",
        "/api/v1/holders",
        json={
            "organisation": "BPOL",
            "family_name": "Keller",
            "given_name": "Jana",
            "country": "DE",
            "role": "police",
            "qualifications": [{"kind": "airside_pass", "last_day": "2031-01-01", "reference": "A-1"}],
            "assignment": {
                "zones": ["L", "A"],
                "first_day": "2030-07-01",
                "last_day": "2030-08-01",
                "shifts": [{"days": ["mon", "tue"], "starts": "06:00", "ends": "14:00"}],
            },
        },
    ).get_json()
    hid = holder["id"]
    call(
        "POST",
        "/api/v1/holders",
        "/api/v1/holders",
        json={"organisation": "BPOL", "family_name": "X", "given_name": "Y", "country": "ZZ", "role": "police"},
    )  # 422
    call("GET", "/api/v1/holders?q=kel", "/api/v1/holders")
    call("GET", f"/api/v1/holders/{hid}", "/api/v1/holders/{holder_id}")
    call("GET", "/api/v1/holders/nope", "/api/v1/holders/{holder_id}")  # 404
    call("PATCH", f"/api/v1/holders/{hid}", "/api/v1/holders/{holder_id}", json={"reference": "BP-9"})
    call(
        "PUT",
        f"/api/v1/holders/{hid}/photo",
        "/api/v1/holders/{holder_id}/photo",
        data=png_photo(),
        content_type="image/png",
    )
    call(
        "PUT",
        f"/api/v1/holders/{hid}/photo",
        "/api/v1/holders/{holder_id}/photo",
        data=b"GIF89a",
        content_type="image/gif",
    )  # 422
    call("GET", f"/api/v1/holders/{hid}/photo", "/api/v1/holders/{holder_id}/photo")
    badge = call("POST", f"/api/v1/holders/{hid}/badges", "/api/v1/holders/{holder_id}/badges").get_json()
    assert badge["qr_version"] <= 12 and badge["badge_codes"] == ["A", "L"]
    call("GET", f"/api/v1/badges/{badge['id']}", "/api/v1/badges/{badge_id}")
    call("GET", f"/api/v1/badges/{badge['id']}/card.pdf", "/api/v1/badges/{badge_id}/card.pdf")
    new = call(
        "POST", f"/api/v1/badges/{badge['id']}/reissue", "/api/v1/badges/{badge_id}/reissue", json={"reason": "lost"}
    ).get_json()
    call("POST", f"/api/v1/badges/{new['id']}/revoke", "/api/v1/badges/{badge_id}/revoke", json={"reason": "x"})
    call("GET", f"/api/v1/badges/{new['id']}/card.pdf", "/api/v1/badges/{badge_id}/card.pdf")  # 409
    call("POST", f"/api/v1/holders/{hid}/suspend", "/api/v1/holders/{holder_id}/suspend", json={"reason": "x"})
    call("POST", f"/api/v1/holders/{hid}/suspend", "/api/v1/holders/{holder_id}/suspend", json={})  # 422
    call("POST", f"/api/v1/holders/{hid}/reinstate", "/api/v1/holders/{holder_id}/reinstate", json={"reason": "y"})
    csv = b"family_name,given_name,role\nA,B,police\nC,D,nope\n"
    call(
        "POST",
        "/api/v1/organisations/BPOL/import",
        "/api/v1/organisations/{code}/import",
        data=csv,
        content_type="text/csv",
    )  # 422, nothing imported
    report = call(
        "POST",
        "/api/v1/organisations/BPOL/import?good_rows_only=true",
        "/api/v1/organisations/{code}/import",
        data=csv,
        content_type="text/csv",
    ).get_json()
    assert report["imported"] == 1 and report["problems"] == [{"line": 3, "reason": report["problems"][0]["reason"]}]
    call("POST", "/api/v1/organisations/BPOL/badges", "/api/v1/organisations/{code}/badges")
    call("GET", "/api/v1/organisations/BPOL/cards.pdf", "/api/v1/organisations/{code}/cards.pdf")
    lead = api_token(instance, "lead1")
    decisions = client.get("/api/v1/decisions", headers=lead)
    conform(
        decisions.get_json(),
        spec["paths"]["/api/v1/decisions"]["get"]["responses"]["200"]["content"]["application/json"]["schema"],
        spec,
        "GET /api/v1/decisions",
    )


def conform(value: Any, schema: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    """The part of JSON Schema the document uses: $ref, type (or list of types), enum, properties, required,
    additionalProperties: false, items, oneOf."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "oneOf" in schema:
        fits = 0
        for option in schema["oneOf"]:
            try:
                conform(value, option, spec, where)
                fits += 1
            except AssertionError:
                pass
        assert fits == 1, f"{where}: {value!r:.80} fits {fits} of the oneOf options"
        return
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        python = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool, "null": type(None)}
        ok = any(isinstance(value, python[n]) and not (n == "integer" and isinstance(value, bool)) for n in names)
        assert ok, f"{where}: {value!r:.80} is not {names}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if isinstance(value, dict) and "properties" in schema:
        missing = set(schema.get("required", [])) - set(value)
        assert not missing, f"{where}: missing {missing}"
        if schema.get("additionalProperties") is False:
            extra = set(value) - set(schema["properties"])
            assert not extra, f"{where}: undocumented {extra}"
        for key, item in value.items():
            if key in schema["properties"]:
                conform(item, schema["properties"][key], spec, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            conform(item, schema["items"], spec, f"{where}[{i}]")
