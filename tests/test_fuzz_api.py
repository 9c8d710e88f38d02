"""The JSON API under fuzzing: schemathesis cases generated from /api/v1/openapi.json, and arbitrary JSON bodies,
sent through the Flask app (WSGI, no server) with a desk operator's API token. No case may get a server error.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from gateway.cli import add_operator, sync_site
from gateway.site import Site
from tests.fuzz_profile import PROFILE, PROFILES, SLOW

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def api_app(tmp_path: Path, site: Site) -> Iterator[tuple[Flask, str, str, str]]:
    """The web app on a fresh SQLite instance, an admin's API token, and a holder and badge to aim at."""
    from gateway import operators
    from gateway.db.engine import make_engine, session_factory, upgrade
    from gateway.instance import create_instance, load_instance
    from gateway.web import create_app
    from tests.factories import badged_holder

    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    create_instance(tmp_path / "instance", url, ROOT / "zones.yaml", site.code)
    instance = load_instance(tmp_path / "instance")
    sync_site(instance, site)
    now = dt.datetime.now(dt.UTC)
    badge = badged_holder(instance, site, ["STADIUM-PERIMETER"], now)
    add_operator(instance, "fuzzer", "admin", "pw-fuzzer-1")  # admin: every operation runs past the role check
    with session_factory(make_engine(url))() as s, s.begin():
        op = operators.find(s, "fuzzer")
        assert op is not None
        token, _ = operators.new_api_token(s, op, "fuzz", now)
    yield create_app(instance.folder, {"SESSION_COOKIE_SECURE": False}), token, badge.holder_id, badge.id


def _schemathesis_cases(operation: Any, token: str, cases: dict[str, int], errors: list[str]) -> None:
    from schemathesis.checks import not_a_server_error

    @SLOW
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        cases["n"] += 1
        response = case.call(headers={"Authorization": f"Bearer {token}"})
        if response.status_code >= 500:
            errors.append(f"{case.method} {case.formatted_path}: {response.status_code}")
        case.validate_response(response, checks=[not_a_server_error])

    run()


def test_schemathesis_finds_no_server_error(api_app: tuple[Flask, str, str, str]) -> None:
    import schemathesis

    app, token, _, _ = api_app
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, "the OpenAPI document lists the desk operations"
    cases = {"n": 0}
    errors: list[str] = []
    for operation in operations:
        _schemathesis_cases(operation, token, cases, errors)
    assert not errors, errors
    assert cases["n"] >= len(operations)
    print(f"\nschemathesis [{PROFILE}]: {len(operations)} operations, {cases['n']} cases, 0 server errors")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=10,
)
# Field names the API knows, so bodies get past the "unknown field" check into the deeper parsing.
FIELDS = [
    "code", "name", "kind", "country", "family_name", "given_name", "role", "reference", "qualifications",
    "assignment", "zones", "first_day", "last_day", "shifts", "reason", "days", "starts", "ends", "status",
]  # fmt: skip


def _bodies() -> st.SearchStrategy[bytes]:
    objects = st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=8)
    return (
        objects.map(lambda o: json.dumps(o).encode())
        | JSON.map(lambda o: json.dumps(o).encode())
        | st.binary(max_size=200)
    )


def _body_cases(client: Any, method: str, path: str, token: str, cases: dict[str, int]) -> None:
    @SLOW
    @given(body=_bodies(), content_type=st.sampled_from(["application/json", "text/csv", "image/jpeg", ""]))
    def run(body: bytes, content_type: str) -> None:
        cases["n"] += 1
        headers = {"Authorization": f"Bearer {token}"}
        if content_type:
            headers["Content-Type"] = content_type
        response = client.open(path, method=method, data=body, headers=headers)
        assert response.status_code < 500, (method, path, body[:200], response.get_data(as_text=True)[:300])
        if response.status_code >= 400:  # every refusal is the API's JSON error shape
            assert isinstance(response.get_json(silent=True), dict), (method, path, response.status_code)

    run()


def test_arbitrary_bodies_get_no_server_error(api_app: tuple[Flask, str, str, str]) -> None:
    app, token, holder_id, badge_id = api_app
    targets = [
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in sorted(rule.methods or ())
        if method in ("POST", "PUT", "PATCH")
    ]
    assert len(targets) >= 8
    client = app.test_client()
    args = {"holder_id": holder_id, "badge_id": badge_id, "code": "TEST-ORG"}
    cases = {"n": 0}
    for template, method in targets:
        path = template
        for name, value in args.items():
            path = path.replace(f"<{name}>", value)

        _body_cases(client, method, path, token, cases)
    print(f"\nAPI bodies [{PROFILE}]: {len(targets)} operations, {cases['n']} cases, 0 server errors")
    assert cases["n"] >= len(targets) * min(PROFILES[PROFILE]["slow"], 5)
