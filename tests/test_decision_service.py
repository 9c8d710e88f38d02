"""The decision service on a real database (SQLite and PostgreSQL): audit first, idempotent, signed."""

from __future__ import annotations

import datetime as dt
import secrets

import pytest
from sqlalchemy import func, select

from gateway import badges, contract
from gateway.audit_verify import verify_database
from gateway.db.engine import make_engine, session_factory, upgrade
from gateway.db.models import AuditEntry
from gateway.db.rawsql import Raw
from gateway.decisions import earlier_query
from tests.factories import badged_holder, decision_service

NOW = dt.datetime(2026, 7, 26, 19, 30, tzinfo=dt.UTC)


@pytest.fixture
def world(instance, site):  # type: ignore[no-untyped-def]
    clock = [NOW]
    service = decision_service(instance, site, lambda: clock[0])
    badge = badged_holder(
        instance,
        site,
        ["STADIUM-PERIMETER", "STADIUM-CONCOURSE"],
        NOW,
        role="gendarme",
        organisation=("GN-75", "Gendarmerie Paris", "gendarmerie", "FR"),
        name=("Martin", "Lea"),
        valid=(dt.timedelta(days=-1), dt.timedelta(days=3)),
    )
    sessions = service.sessions
    return service, sessions, badge, instance


def request(token: str, reader: str = "STA-G1-IN") -> contract.DecisionRequest:
    return contract.DecisionRequest(reader=reader, nonce=secrets.token_hex(16), token=token, sent_ms=0)


def keys(instance) -> dict:  # type: ignore[no-untyped-def]
    pub = instance.keyring.decision_signing.public_key()
    return {contract.key_id(pub): pub}


def rows(sessions) -> list[AuditEntry]:  # type: ignore[no-untyped-def]
    """The decision entries (issuing the fixture's badge is audited too)."""
    with sessions() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.kind == "decision").order_by(AuditEntry.seq)))


def test_allow_is_logged_and_signed(world) -> None:  # type: ignore[no-untyped-def]
    service, sessions, badge, instance = world
    req = request(badge.token)
    answer = service.answer(req)
    assert (answer.allow, answer.reason, answer.gate, answer.badge) == (True, "granted", "STA-G1", badge.id)
    now_ms = int(NOW.timestamp() * 1000)
    assert contract.answer_problem(answer, keys(instance), reader="STA-G1-IN", nonce=req.nonce, now_ms=now_ms) is None
    [row] = rows(sessions)
    assert (row.allow, row.reason, row.gate, row.badge_id, row.ref) == (
        True,
        "granted",
        "STA-G1",
        badge.id,
        req.nonce,
    )


@pytest.mark.parametrize(
    ("reader", "reason"),
    [("STA-G3-IN", "zone_not_permitted"), ("GDN-G1-IN", "zone_not_permitted"), ("NO-SUCH", "unknown_reader")],
)
def test_denials_are_logged_with_their_reason(world, reader: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    service, sessions, badge, _ = world
    answer = service.answer(request(badge.token, reader))
    assert (answer.allow, answer.reason) == (False, reason)
    assert [(r.allow, r.reason) for r in rows(sessions)] == [(False, reason)]


def test_revocation_changes_the_next_decision(world) -> None:  # type: ignore[no-untyped-def]
    service, sessions, badge, _ = world
    assert service.answer(request(badge.token)).allow
    with sessions() as s, s.begin():
        badges.revoke_badge(s, badge.id, "lost", NOW)
    answer = service.answer(request(badge.token))
    assert (answer.allow, answer.reason) == (False, "revoked")


def test_repeated_nonce_gets_the_same_answer_and_one_row(world) -> None:  # type: ignore[no-untyped-def]
    service, sessions, badge, _ = world
    req = request(badge.token)
    first = service.answer(req)
    second = service.answer(req)
    assert (second.allow, second.reason, second.decided_ms, second.nonce) == (
        first.allow,
        first.reason,
        first.decided_ms,
        first.nonce,
    )
    assert len(rows(sessions)) == 1


def test_garbage_token_is_denied_and_logged(world) -> None:  # type: ignore[no-untyped-def]
    service, sessions, _, _ = world
    answer = service.answer(request("not-a-token"))
    assert (answer.allow, answer.reason, answer.badge) == (False, "token_malformed", "")
    assert len(rows(sessions)) == 1


def test_audit_chain_links_every_row_and_detects_an_edit(world) -> None:  # type: ignore[no-untyped-def]
    service, sessions, badge, _ = world
    for reader in ("STA-G1-IN", "STA-G2-IN", "STA-G3-IN"):
        service.answer(request(badge.token, reader))
    with sessions() as s:
        assert verify_database(s, [], {}).ok
    with sessions() as s, s.begin():
        row = s.scalar(select(AuditEntry).where(AuditEntry.seq == 2))
        assert row is not None
        row.reason = "granted" if row.reason != "granted" else "revoked"
    with sessions() as s:
        assert verify_database(s, [], {}).bad_seq == 2


def test_unloggable_decision_is_a_denial(world) -> None:  # type: ignore[no-untyped-def]
    service, sessions, badge, _ = world
    with sessions() as s, s.begin():
        s.execute(AuditEntry.__table__.delete())
    service.sessions.kw["bind"].dispose()
    # Point the service at a database without the schema: the audit write fails, so nothing may be granted.
    service.sessions = session_factory(make_engine("sqlite://"))
    answer = service.answer(request(badge.token))
    assert (answer.allow, answer.reason) == (False, "not_logged")
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == 0


def test_the_nonce_look_up_reads_the_unique_nonce_index_not_every_decision(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # With `kind = 'decision'` beside `ref IN (...)`, SQLite chose the (kind, seq) index and walked every
    # decision ever logged, per batch: 4.5 ms a batch at 30,000 entries, growing with the audit.
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    upgrade(url)
    with make_engine(url).connect() as conn:
        statement, params = earlier_query(Raw(None, "sqlite", None), ["a", "b", "c"])
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, tuple(params)).all()
    [(*_, step)] = plan
    assert step.startswith("SEARCH audit_entries USING INDEX") and step.endswith("(ref=?)"), step


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_on_postgresql_a_batch_reads_with_one_statement_text_whatever_its_size_and_by_the_nonce_index(
    instance,  # type: ignore[no-untyped-def]
) -> None:
    raw = Raw(None, "postgresql", None)
    one, three = earlier_query(raw, ["a"]), earlier_query(raw, ["a", "b", "c"])
    assert one[0] == three[0] and three[1] == [["a", "b", "c"]]  # one array: one prepared statement for all sizes
    engine = make_engine(instance.settings.database_url)
    with engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")  # a tiny table: ask whether the index can serve at all
        statement, params = earlier_query(raw, ["a", "b", "c"])
        plan = conn.exec_driver_sql("EXPLAIN " + statement.replace("?", "%s"), tuple(params)).scalars().all()
    engine.dispose()
    assert any("uq_audit_ref" in line for line in plan), plan
