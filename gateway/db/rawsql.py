"""Plain SQL on a DB-API connection: the decision hot path only.

An ORM query costs about 0.3 ms of Python before the database sees it, and a session's begin and commit as
much again; a decision batch ran nine statements, so the ORM alone capped a worker near 250 batches/s. The
decision service runs its few statements straight on the driver instead: on SQLite in a transaction of its own
(`transaction`), on PostgreSQL as two statements that each commit on their own (`autocommitting`), or inside a
session's transaction (`Raw.of`). Statements are written with `?` placeholders
and rewritten for drivers that use `%s`. Times are stored exactly as SQLAlchemy stores them (see
`UTCDateTime`), so ORM queries and these statements read and compare the same values. Driver errors are
raised as SQLAlchemy's exception classes, so callers handle one family of database errors.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

Query = tuple[str, Sequence[Any]]  # a statement with `?` placeholders, and its parameters

# SQLAlchemy's SQLite DATETIME format: what an ORM write of the same value would store, byte for byte.
_SQLITE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class Raw:
    def __init__(self, dbapi_connection: Any, dialect_name: str, driver: Any) -> None:
        self.sqlite = dialect_name == "sqlite"
        self._dbapi = dbapi_connection
        self._driver = driver  # the DB-API module: its Error and IntegrityError classes

    @classmethod
    def of(cls, db: Session | Raw) -> Raw:
        """The driver connection of a session's transaction (begun now if it was not)."""
        if isinstance(db, Raw):
            return db
        conn = db.connection()
        return cls(conn.connection.driver_connection, conn.dialect.name, conn.dialect.dbapi)

    def sql(self, statement: str) -> str:
        return statement if self.sqlite else statement.replace("?", "%s")

    def rows(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._dbapi.cursor()
        try:
            cur.execute(self.sql(statement), tuple(params))
            return list(cur.fetchall()) if cur.description is not None else []
        except self._driver.Error as exc:
            raise self._error(statement, params, exc) from exc
        finally:
            cur.close()

    def one_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """`column` equal to one of `values`: a condition and its parameters. On PostgreSQL `= ANY(?)` with one
        array, so a statement's text is the same whatever the batch's size: psycopg converts it once and the
        server keeps one prepared plan (an IN list made a statement per size, and past 50 parameters psycopg
        stopped caching its conversion). SQLite takes no arrays: an IN list there."""
        if self.sqlite:
            return f"{column} IN ({placeholders(len(values))})", list(values)
        return f"{column} = ANY(?)", [list(values)]

    def rows_combined(self, queries: Sequence[Query]) -> list[list[tuple[Any, ...]]]:
        """The rows of several independent reads, as `rows` would return them. On PostgreSQL they run as one
        statement (each read aggregated to JSON): psycopg costs ~40 us of Python per statement, in a pipeline or
        not, and a round trip here only ~50 us, so the statement count is what a decision batch pays for.
        One statement means one snapshot: a read that must see the effect of an earlier one (a lock, then what
        it guards) does not belong here. Times come back as text, which `when` and `time_out` read as well.
        Column names of a read must differ (they become JSON keys)."""
        if self.sqlite or len(queries) < 2:  # SQLite is in-process: a statement costs microseconds
            return [self.rows(statement, params) for statement, params in queries]
        parts = [f"(SELECT coalesce(json_agg(q), '[]') FROM ({statement}) q)" for statement, _ in queries]
        params = [p for _, query_params in queries for p in query_params]
        (row,) = self.rows(f"SELECT {', '.join(parts)}", params)
        return [[tuple(item.values()) for item in result] for result in row]

    def _error(self, statement: str, params: Any, exc: Exception) -> DBAPIError:
        kind = IntegrityError if isinstance(exc, self._driver.IntegrityError) else DBAPIError
        return kind(statement, params, exc)

    def time_in(self, value: dt.datetime | None) -> Any:
        """A UTC time as the column stores it (naive UTC; text on SQLite)."""
        if value is None:
            return None
        naive = value.astimezone(dt.UTC).replace(tzinfo=None)
        return naive.strftime(_SQLITE_FORMAT) if self.sqlite else naive

    def time_out(self, value: Any) -> dt.datetime | None:
        """A stored time (of a nullable column) back as an aware UTC datetime."""
        return None if value is None else self.when(value)

    def when(self, value: Any) -> dt.datetime:
        """A stored time of a NOT NULL column back as an aware UTC datetime."""
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        if not isinstance(moment, dt.datetime):
            raise TypeError(f"not a stored time: {value!r}")
        return moment.replace(tzinfo=dt.UTC)


@contextmanager
def transaction(engine: Engine) -> Iterator[Raw]:
    """One transaction on a pooled driver connection: committed when the block ends, rolled back on error.

    On SQLite the write lock is taken at the start (BEGIN IMMEDIATE), as the engine does for sessions.
    A connection that failed for any reason but a constraint is discarded rather than pooled again.
    """
    with _pooled(engine) as (pooled, raw):
        if raw.sqlite:
            raw.rows("BEGIN IMMEDIATE")
        yield raw
        try:
            pooled.commit()
        except engine.dialect.dbapi.Error as exc:  # type: ignore[union-attr]
            raise DBAPIError("COMMIT", (), exc) from exc


@contextmanager
def autocommitting(engine: Engine) -> Iterator[Raw]:
    """PostgreSQL statements on a pooled driver connection, each its own transaction, committed (durably, with
    the server's synchronous_commit) before it returns. No BEGIN and no COMMIT go over the wire: for a decision
    batch that is two round trips fewer than `transaction`. For SQLite use `transaction`."""
    if engine.dialect.name != "postgresql":
        raise ValueError("autocommitting is for PostgreSQL")
    with _pooled(engine) as (pooled, raw):
        driver = pooled.driver_connection
        driver.autocommit = True
        try:
            yield raw
        finally:
            if not driver.closed:
                driver.autocommit = False  # back to the pool as the other users of the engine expect it


@contextmanager
def _pooled(engine: Engine) -> Iterator[tuple[Any, Raw]]:
    """A pooled connection for the block, rolled back on error. One that failed for any reason but a constraint is
    discarded rather than pooled again."""
    pooled = engine.raw_connection()
    raw = Raw(pooled.driver_connection, engine.dialect.name, engine.dialect.dbapi)
    try:
        yield pooled, raw
    except BaseException as exc:
        try:
            pooled.rollback()
            reusable = isinstance(exc, IntegrityError)
        except Exception:
            reusable = False
        if not reusable:
            pooled.invalidate()
        raise
    finally:
        pooled.close()


def placeholders(count: int) -> str:
    """`?, ?, ?` for an IN list of `count` values."""
    return ", ".join("?" * count)
