"""A bound on how long an engine's transactions wait for a database lock, for the decision path.

A reader gives up on the gateway after 1.5 s (`gateway_unreachable`). If the audit is locked (a backup, a
migration, a stuck session), a decision that waits longer than that helps nobody: the answer arrives after the
reader stopped listening, and meanwhile requests pile up behind it. With a bound below the reader's timeout, the
decision fails fast, DecisionService answers `not_logged` (a denial the reader shows), and the next batch tries
again, so the service recovers by itself as soon as the lock is gone.

Without it, SQLite waits 15 s (`busy_timeout`, gateway/db/engine.py) and PostgreSQL waits for ever.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event

DECISION_LOCK_WAIT_MS = 1000  # below the reader's 1.5 s answer timeout


def bound_lock_waits(engine: Engine, wait_ms: int = DECISION_LOCK_WAIT_MS) -> Engine:
    """Make every new connection of `engine` give up on a lock after `wait_ms` (SQLite and PostgreSQL)."""
    if wait_ms <= 0:
        raise ValueError("the lock wait must be positive")
    dialect = engine.dialect.name

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if dialect == "sqlite":
            # Registered after make_engine's own listener, so this replaces its 15 s busy_timeout.
            cur.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
        elif dialect == "postgresql":
            # lock_timeout covers row, table and advisory locks (the audit chain's lock is one).
            cur.execute(f"SET lock_timeout = {int(wait_ms)}")
            dbapi_conn.commit()  # psycopg opened a transaction for the SET; end it so the setting is the session's
        cur.close()

    return engine
