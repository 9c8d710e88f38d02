"""The audit database locked or cut off: the gateway denies (`not_logged`), never grants unlogged, and recovers.

Real databases: an SQLite file with a write lock held by another process's connection, and PostgreSQL with the
audit table locked by another session or the gateway's own connection terminated by the server
(pg_terminate_backend). The decision service under test is the production one (tests/factories.py), with or
without gateway/lock_waits.py's bound on lock waits.

Each check holds the lock until the decision has come back, so the outcome never depends on timing.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from gateway import contract
from gateway.db.engine import decision_engine, make_engine, session_factory
from gateway.db.models import AuditEntry, Badge
from gateway.db.rawsql import Raw, transaction
from gateway.decisions import DecisionService, earlier_query
from gateway.instance import Instance
from gateway.lock_waits import bound_lock_waits
from gateway.site import Site
from tests.conftest import PG_URL
from tests.factories import badged_holder, decision_service

READER = "STA-G1-IN"
ZONES = ["STADIUM-PERIMETER"]
DEADLINE_S = 60.0  # generous bound for a loaded machine, never a timing assertion
pytestmark = pytest.mark.slow


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def service_for(instance: Instance, site: Site, url: str, *, bounded: bool) -> DecisionService:
    engine = decision_engine(url)  # as the decision process makes it
    if bounded:
        bound_lock_waits(engine)
    return decision_service(instance, site, _now, engine)


def request(badge: Badge) -> contract.DecisionRequest:
    return contract.DecisionRequest(
        reader=READER, nonce=secrets.token_hex(16), token=badge.token, sent_ms=int(time.time() * 1000)
    )


def logged(instance: Instance, nonce: str) -> AuditEntry | None:
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s:
        return s.scalars(select(AuditEntry).where(AuditEntry.ref == nonce)).first()


class Background:
    """A decision running on its own thread."""

    def __init__(self, service: DecisionService, req: contract.DecisionRequest) -> None:
        self._out: list[contract.DecisionAnswer] = []
        self._thread = threading.Thread(target=lambda: self._out.append(service.answer(req)), daemon=True)
        self._thread.start()

    def answered(self) -> bool:
        return bool(self._out)

    def result(self) -> contract.DecisionAnswer:
        self._thread.join(DEADLINE_S)
        assert self._out, "the decision never came back"
        return self._out[0]


def assert_denied_unlogged(instance: Instance, answer: contract.DecisionAnswer, nonce: str) -> None:
    assert (answer.allow, answer.reason) == (False, "not_logged")
    assert logged(instance, nonce) is None


def assert_recovered(instance: Instance, service: DecisionService, badge: Badge) -> None:
    """The very next request, with the fault gone, is decided normally and logged: no restart needed."""
    req = request(badge)
    answer = service.answer(req)
    assert (answer.allow, answer.reason) == (True, "granted")
    row = logged(instance, req.nonce)
    assert row is not None and row.allow


# --- SQLite: another process holds the write lock --------------------------------------------------------


@contextmanager
def sqlite_write_lock(url: str) -> Iterator[None]:
    """What a backup tool or a stuck admin session does: an exclusive transaction on the gateway's file."""
    path = make_url(url).database
    assert path is not None
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("bounded", [False, True], ids=["engine-default", "bounded-lock-wait"])
def test_sqlite_locked_denies_not_logged_and_recovers(instance: Instance, site: Site, bounded: bool) -> None:
    service = service_for(instance, site, instance.settings.database_url, bounded=bounded)
    badge = badged_holder(instance, site, ZONES, _now())
    assert_recovered(instance, service, badge)  # works before the fault (and warms the pool)
    req = request(badge)
    with sqlite_write_lock(instance.settings.database_url):
        # Default engine: after its 15 s busy timeout; bounded: after 1 s. Either way while the lock is held.
        answer = service.answer(req)
    assert_denied_unlogged(instance, answer, req.nonce)
    assert_recovered(instance, service, badge)


# --- PostgreSQL: the audit table locked, the connection terminated ---------------------------------------


def _tagged(url: str, tag: str) -> str:
    """The URL with an application_name, so that this test finds (and terminates) only its own sessions."""
    return f"{url}{'&' if '?' in url else '?'}application_name={tag}"


@contextmanager
def pg_audit_table_lock(url: str) -> Iterator[None]:
    """Another session holds the audit table in ACCESS EXCLUSIVE mode (what a long migration or VACUUM FULL does)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            trans = conn.begin()
            conn.execute(text("LOCK TABLE audit_entries IN ACCESS EXCLUSIVE MODE"))
            yield
            trans.rollback()
    finally:
        engine.dispose()


def wait_until_blocked(tag: str) -> list[int]:
    """Backends of `tag` waiting for a lock (the decision, stuck behind ours)."""
    admin = create_engine(PG_URL)
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline:
            with admin.connect() as conn:
                pids = list(
                    conn.scalars(
                        text(
                            "SELECT pid FROM pg_stat_activity"
                            " WHERE application_name = :tag AND wait_event_type = 'Lock'"
                        ),
                        {"tag": tag},
                    )
                )
            if pids:
                return pids
            time.sleep(0.05)
    finally:
        admin.dispose()
    pytest.fail("the decision never waited for the lock")


def terminate(pids: list[int]) -> None:
    admin = create_engine(PG_URL)
    try:
        with admin.connect() as conn:
            for pid in pids:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        admin.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_locked_denies_not_logged_with_a_bounded_lock_wait(instance: Instance, site: Site) -> None:
    url = instance.settings.database_url
    service = service_for(instance, site, url, bounded=True)
    badge = badged_holder(instance, site, ZONES, _now())
    assert_recovered(instance, service, badge)
    req = request(badge)
    with pg_audit_table_lock(url):
        answer = service.answer(req)
    assert_denied_unlogged(instance, answer, req.nonce)
    assert_recovered(instance, service, badge)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_locked_without_a_bound_waits_and_never_grants_unlogged(instance: Instance, site: Site) -> None:
    """The engine as make_engine builds it: the decision waits for the lock (the reader has long given up) and is
    then decided and logged; nothing is answered before it is in the audit."""
    tag = f"faults-{secrets.token_hex(4)}"
    url = _tagged(instance.settings.database_url, tag)
    service = service_for(instance, site, url, bounded=False)
    badge = badged_holder(instance, site, ZONES, _now())
    assert_recovered(instance, service, badge)
    req = request(badge)
    with pg_audit_table_lock(instance.settings.database_url):
        decision = Background(service, req)
        wait_until_blocked(tag)
        assert not decision.answered()  # it waits for the audit: no answer before its entry is written
    answer = decision.result()
    row = logged(instance, req.nonce)
    assert row is not None and (bool(row.allow), row.reason) == (answer.allow, answer.reason) == (True, "granted")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_connection_terminated_denies_not_logged_and_recovers(instance: Instance, site: Site) -> None:
    """The server ends the gateway's session mid-decision (a restart, a failover, an admin's pg_terminate_backend)."""
    tag = f"faults-{secrets.token_hex(4)}"
    url = _tagged(instance.settings.database_url, tag)
    service = service_for(instance, site, url, bounded=False)
    badge = badged_holder(instance, site, ZONES, _now())
    assert_recovered(instance, service, badge)
    req = request(badge)
    with pg_audit_table_lock(instance.settings.database_url):
        decision = Background(service, req)
        terminate(wait_until_blocked(tag))
        answer = decision.result()
    assert_denied_unlogged(instance, answer, req.nonce)
    # Every pooled connection of the service was cut as well: the pool's check at checkout replaces them unasked.
    terminate(idle_sessions(tag))
    assert_recovered(instance, service, badge)


def test_postgresql_decision_engine_reuses_a_live_connection_and_replaces_one_the_server_ended() -> None:
    """The decision path's engine checks a pooled connection by its socket, not with a round trip. The check must
    pass a live connection (else every batch would connect afresh) and refuse one the server closed."""
    tag = f"faults-{secrets.token_hex(4)}"
    engine = make_engine(_tagged(PG_URL, tag), ping=False)

    def backend() -> int:
        with transaction(engine) as raw:
            return int(raw.rows("SELECT pg_backend_pid()")[0][0])

    try:
        first = backend()
        assert backend() == first  # kept in the pool and passed by the check
        terminate([first])
        deadline = time.monotonic() + DEADLINE_S
        while idle_sessions(tag) and time.monotonic() < deadline:  # the backend has exited, its socket closed
            time.sleep(0.05)
        replaced = backend()  # no error: the check saw the closed socket and the pool connected again
        assert replaced != first
        assert backend() == replaced
    finally:
        engine.dispose()


def test_postgresql_decision_engine_checks_a_connection_on_a_high_file_descriptor() -> None:
    """A busy process can hold more than 1,024 files: the check must work on any descriptor (select() refuses
    those above 1023; the check uses poll())."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    fillers: list[int] = []
    engine = make_engine(PG_URL, ping=False)
    try:
        while not fillers or fillers[-1] < 1100:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        for _ in range(2):  # the second checkout runs the check on the pooled connection
            with transaction(engine) as raw:
                assert raw.rows("SELECT 1") == [(1,)]
        pooled = engine.raw_connection()
        try:
            assert pooled.driver_connection.fileno() > 1023
        finally:
            pooled.close()
    finally:
        engine.dispose()
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def idle_sessions(tag: str) -> list[int]:
    admin = create_engine(PG_URL)
    try:
        with admin.connect() as conn:
            return list(
                conn.scalars(text("SELECT pid FROM pg_stat_activity WHERE application_name = :tag"), {"tag": tag})
            )
    finally:
        admin.dispose()


def test_the_lock_wait_bound_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        bound_lock_waits(make_engine(f"sqlite:///{tmp_path / 'x.db'}"), 0)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_decision_engine_plans_a_batch_once_and_by_index(instance: Instance) -> None:
    """The decision engine's connections keep one generic plan per statement, and that plan reads by index even
    when the planner's statistics are of an empty audit (a fresh database; or autovacuum off, as on the bench
    machine): there, a generic plan scanned the whole audit for each batch's nonces."""
    engine = decision_engine(instance.settings.database_url)
    try:
        with engine.connect() as conn:
            shown = [conn.exec_driver_sql(f"SHOW {name}").scalar() for name in ("enable_seqscan", "jit")]
            assert shown == ["off", "off"]
            assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_generic_plan"
            raw = Raw(None, "postgresql", None)
            statement, _ = earlier_query(raw, ["any"])
            conn.exec_driver_sql("PREPARE nonces(text[]) AS " + statement.replace("?", "$1"))
            plan = "\n".join(conn.exec_driver_sql("EXPLAIN EXECUTE nonces('{a,b,c}')").scalars())
    finally:
        engine.dispose()
    assert "uq_audit_ref" in plan and "Seq Scan" not in plan, plan
