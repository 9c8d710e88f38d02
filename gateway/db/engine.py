"""Engines for SQLite (the embedded default, in WAL mode) and PostgreSQL, and the schema migration entry point."""

from __future__ import annotations

import select
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str, *, ping: bool = True) -> Engine:
    """An engine for `url`. On PostgreSQL a pooled connection is checked before each use, so that one the server
    ended (a restart, a failover, pg_terminate_backend) is replaced unseen: by default with a SELECT 1 round trip
    (`pool_pre_ping`); with `ping=False`, the decision path's choice, by a look at the socket instead, since a
    server that ends a session closes it. The round trip cost a decision ~0.1 ms; the look, a system call."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 15, "check_same_thread": False})
        _sqlite_setup(engine)
        return engine
    if ping:
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url)
    event.listen(engine, "checkout", _refuse_if_closed_by_server)
    return engine


def decision_engine(url: str) -> Engine:
    """The decision path's engine: `make_engine(url, ping=False)`, and on PostgreSQL reads by index only.

    Its statements are prepared by psycopg and, after five runs, kept with one generic plan, made from the
    statistics of that moment. From a young audit (or with autovacuum off, where no ANALYZE ever comes) the plan
    for a batch's nonce look-up was a scan of the whole audit: a p50 of 9.7-17.8 ms at 500/s once it held some
    thousands of entries (docs/performance.md). Every read of a batch has an index to go by, so the planner is told to
    take it (enable_seqscan off still lets it scan a table that has no usable index). JIT is off as well: the
    penalty enable_seqscan puts on such a scan (the occupancy table's) lifts a plan's cost past jit_above_cost,
    and compiling took longer than any decision may."""
    engine = make_engine(url, ping=False)
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _reads_by_index)
    return engine


def _reads_by_index(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("SET enable_seqscan = off")
    cur.execute("SET jit = off")
    cur.execute("SET plan_cache_mode = force_generic_plan")
    cur.close()
    dbapi_conn.commit()  # psycopg opened a transaction for the SET; end it so the setting is the session's


def _refuse_if_closed_by_server(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    # An idle connection has nothing to read, unless the server wrote its last words (FATAL) and hung up.
    # poll, not select: select refuses file descriptors above 1023.
    poller = select.poll()
    poller.register(dbapi_conn.fileno(), select.POLLIN)
    if poller.poll(0):
        raise DisconnectionError("the server closed this connection")  # the pool connects afresh and retries


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling is off, so that BEGIN IMMEDIATE below is the only one.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")  # readers never block the decision writer
        cur.execute("PRAGMA synchronous=FULL")  # an audit row that was committed survives power loss
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=15000")
        cur.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        # Take the write lock at the start: the audit chain reads its head and appends in one step.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database schema up to `revision` through the Alembic migrations."""
    command.upgrade(alembic_config(url), revision)
