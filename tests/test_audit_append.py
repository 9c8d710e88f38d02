"""PostgreSQL's decision write: `audit_append()` (migration 0007) locks the chain, checks the head, inserts, commits.

The decision batch reads the chain's head without the lock, decides, and hands its entries to the function. These
tests move the head in that gap with a real second writer (another session, committing), hold the chain's lock
from another session, and wear the head out, and check that the chain stays one verifiable line and that nothing
is granted unlogged.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway import audit, contract
from gateway.audit_verify import verify_database
from gateway.db.engine import decision_engine, make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.decisions import DecisionService
from gateway.instance import Instance
from gateway.lock_waits import bound_lock_waits
from gateway.site import Site
from tests.factories import badged_holder, decision_service

on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
ZONES = ["STADIUM-PERIMETER"]
MIGRATION = Path(__file__).resolve().parent.parent / "gateway/migrations/versions/0007_audit_append.py"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def sessions(instance: Instance) -> Iterator[Any]:
    engine = make_engine(instance.settings.database_url)
    yield session_factory(engine)
    engine.dispose()


def another_writer(sessions: Any) -> None:
    """A desk or lead action committed by another session: it moves the chain's head."""
    with sessions() as s, s.begin():
        audit.record_action(s, "threat_level_changed", _now(), operator="lead-test", detail="elsewhere")


def service(instance: Instance, site: Site, clock: Callable[[], dt.datetime] = _now) -> DecisionService:
    engine = bound_lock_waits(decision_engine(instance.settings.database_url), wait_ms=200)
    return decision_service(instance, site, clock, engine)


def ask(badge_token: str) -> contract.DecisionRequest:
    return contract.DecisionRequest("STA-G1-IN", secrets.token_hex(16), badge_token, 0)


def chain(sessions: Any) -> list[tuple[int, str, str | None]]:
    with sessions() as s:
        assert verify_database(s, [], {}).ok
        return [(e.seq, e.kind, e.ref) for e in s.scalars(select(AuditEntry).order_by(AuditEntry.seq))]


def test_the_function_takes_the_lock_every_writer_takes() -> None:
    spec = importlib.util.spec_from_file_location("migration_0007", MIGRATION)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert f"pg_advisory_xact_lock({audit._CHAIN_LOCK})" in migration.FUNCTION
    assert "repeat('0', 64)" in migration.FUNCTION and audit.GENESIS == "0" * 64


@on_postgresql
def test_a_head_moved_while_the_batch_was_decided_is_written_after(
    instance: Instance, site: Site, sessions: Any
) -> None:
    badge = badged_holder(instance, site, ZONES, _now())
    calls = 0

    def clock() -> dt.datetime:
        # The service reads the clock when the batch arrives, then once more between its reads and its write:
        # that is when the other writer commits.
        nonlocal calls
        calls += 1
        if calls == 2:
            another_writer(sessions)
        return _now()

    req = ask(badge.token)
    answer = service(instance, site, clock).answer(req)
    assert (answer.allow, answer.reason) == (True, "granted")
    entries = chain(sessions)
    assert [kind for _, kind, _ in entries[-2:]] == ["threat_level_changed", "decision"]
    assert entries[-1][2] == req.nonce
    assert [seq for seq, _, _ in entries] == list(range(1, len(entries) + 1))


@on_postgresql
def test_a_head_that_keeps_moving_denies_not_logged(
    instance: Instance, site: Site, sessions: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    badge = badged_holder(instance, site, ZONES, _now())
    hashed = audit._chained_rows

    def moved_before_each_try(*args: Any) -> Any:
        another_writer(sessions)  # every try finds the head elsewhere again
        return hashed(*args)

    monkeypatch.setattr(audit, "_chained_rows", moved_before_each_try)
    req = ask(badge.token)
    answer = service(instance, site).answer(req)
    assert (answer.allow, answer.reason) == (False, "not_logged")
    monkeypatch.undo()
    entries = chain(sessions)
    assert req.nonce not in {ref for _, _, ref in entries}
    with sessions() as s:
        moves = s.scalar(select(func.count()).where(AuditEntry.kind == "threat_level_changed"))
    assert moves == audit._MOVES_TOLERATED


@on_postgresql
def test_a_decision_waits_for_another_writer_holding_the_chain(instance: Instance, site: Site, sessions: Any) -> None:
    """A writer that holds the chain's lock (its transaction still open) keeps the decision out: with the decision
    path's bounded lock wait, the answer is not_logged, and once that writer is done, decisions are logged again."""
    badge = badged_holder(instance, site, ZONES, _now())
    decisions = service(instance, site)
    with sessions() as s, s.begin():
        audit.record_action(s, "badge_printed", _now(), operator="desk-test")  # holds the lock until commit
        held = ask(badge.token)
        answer = decisions.answer(held)
        assert (answer.allow, answer.reason) == (False, "not_logged")
    after = ask(badge.token)
    answer = decisions.answer(after)
    assert (answer.allow, answer.reason) == (True, "granted")
    refs = {ref for _, _, ref in chain(sessions)}
    assert after.nonce in refs and held.nonce not in refs
