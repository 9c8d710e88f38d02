"""The database's part of a decision's floor: the least a decision needs from it, paced like the bench's rates.

    .venv/bin/python bench/db_floor.py [--database sqlite|postgresql] [--rate 500] [--seconds 5]

A decision reads its facts and commits its audit entry durably before its answer may leave. Whatever the code
around them, that is at least one read (a round trip on PostgreSQL) and one durable commit. This times both on
their own, with nothing else in the transaction: `SELECT 1`, and one short row inserted into a scratch table and
committed (on PostgreSQL in autocommit, one round trip; on SQLite in WAL with synchronous=FULL, as the gateway
runs it). The pacing matters: at 500/s the machine idles between requests, and each statement then pays for
waking the server up, which a back-to-back loop would hide. `bench/decisions.py` adds these to the bare MQTT echo.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.db.engine import make_engine  # noqa: E402

PROBE_TABLE = "bench_floor_probe"


@dataclass(frozen=True)
class Floor:
    read_ms: float  # p50 of a read round trip
    commit_ms: float  # p50 of a durable one-row commit
    samples: int


def _paced(rate: int, seconds: float, step: Any) -> list[float]:
    """Run `step` at `rate` per second for `seconds`; its durations in ms. Sleeps to each slot, as readers arrive."""
    interval = 1.0 / rate
    out: list[float] = []
    next_at = time.perf_counter()
    for _ in range(int(rate * seconds)):
        next_at += interval
        while (left := next_at - time.perf_counter()) > 0:
            time.sleep(left)
        t0 = time.perf_counter()
        step()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def measure_floor(url: str, rate: int = 500, seconds: float = 5.0) -> Floor:
    """The p50 of a read and of a durable commit on `url`, each paced at `rate`; the scratch table is dropped."""
    engine = make_engine(url, ping=False)
    raw = engine.raw_connection()
    try:
        conn: Any = raw.driver_connection
        sqlite = engine.dialect.name == "sqlite"
        if not sqlite:
            conn.autocommit = True  # each statement its own transaction, committed before the reply: one round trip
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (id INTEGER PRIMARY KEY, ref TEXT NOT NULL)")
        counter = iter(range(1, 10**9))

        def read() -> None:
            cur.execute("SELECT 1")
            cur.fetchall()

        def commit() -> None:
            n = next(counter)
            if sqlite:  # the driver opens no transaction itself (the gateway's setting): this one is spelled out
                cur.execute("BEGIN IMMEDIATE")
                cur.execute(f"INSERT INTO {PROBE_TABLE} (id, ref) VALUES (?, ?)", (n, f"nonce-{n:032d}"))
                cur.execute("COMMIT")
            else:
                cur.execute(f"INSERT INTO {PROBE_TABLE} (id, ref) VALUES (%s, %s)", (n, f"nonce-{n:032d}"))

        reads = _paced(rate, seconds, read)
        commits = _paced(rate, seconds, commit)
        cur.execute(f"DROP TABLE {PROBE_TABLE}")
        return Floor(statistics.median(reads), statistics.median(commits), len(reads))
    finally:
        raw.close()
        engine.dispose()


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        return value

    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--rate", type=_positive(int), default=500, help="statements per second")
    parser.add_argument("--seconds", type=_positive(float), default=5.0, help="per kind of statement")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if opts.database == "sqlite":
            url, schema = f"sqlite:///{Path(tmp) / 'floor.db'}", ""
        else:
            from bench.decisions import drop_schema, pg_schema_url

            url, schema = pg_schema_url()
        try:
            f = measure_floor(url, opts.rate, opts.seconds)
        finally:
            if schema:
                drop_schema(schema)
    print(
        f"{opts.database} at {opts.rate}/s ({f.samples} each): read p50 {f.read_ms:.3f} ms, "
        f"durable one-row commit p50 {f.commit_ms:.3f} ms"
    )


if __name__ == "__main__":
    main()
