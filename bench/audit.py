"""Audit benchmark: a chain of N entries on SQLite and PostgreSQL; how fast it verifies.

    .venv/bin/python bench/audit.py [--entries 1000000] [--databases sqlite,postgresql]

Builds the chain with the real hashing code (bulk inserts), then times `verify_database` over all of it twice:
right after the build, and again. The first read of a million fresh rows is the slower one: PostgreSQL writes
each page's visibility hints on that read (a table in use has them already), and both databases start with
cold caches. Copy the printed table into docs/performance.md ("Audit").
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, insert, text  # noqa: E402

from gateway import audit  # noqa: E402
from gateway.audit_verify import verify_database  # noqa: E402
from gateway.db.engine import make_engine, session_factory, upgrade  # noqa: E402
from gateway.db.models import AuditEntry  # noqa: E402

PG_URL = os.environ.get("ACCESSGW_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
GATES = ["STA-G1", "STA-G2", "STA-G3", "GDN-G1", "CDG-G1", "CDG-G2"]
REASONS = ["granted"] * 8 + ["zone_not_permitted", "expired", "revoked", "anti_passback"]


def build(url: str, entries: int) -> float:
    """Fill the chain; returns seconds taken."""
    engine = make_engine(url)
    t0 = dt.datetime(2026, 7, 24, tzinfo=dt.UTC)
    started = time.perf_counter()
    prev = audit.GENESIS
    batch: list[dict[str, object]] = []
    with engine.begin() as conn:
        for seq in range(1, entries + 1):
            gate = GATES[seq % len(GATES)]
            at = t0 + dt.timedelta(milliseconds=seq * 37)
            entry = audit.Entry(
                kind="decision",
                ref=secrets.token_hex(16),
                at=at,
                recorded_at=at,
                reader=f"{gate}-IN",
                gate=gate,
                badge_id=f"b{seq % 50000:07d}",
                holder_id=f"h{seq % 50000:07d}",
                allow=REASONS[seq % 12] == "granted",
                reason=REASONS[seq % 12],
                mode="online",
                detail="threat level vigilance",
                expires_ms=1_800_000_000_000,
            )
            digest = audit.entry_hash(prev, seq, entry)
            batch.append({"seq": seq, "prev_hash": prev, "entry_hash": digest, **dataclasses.asdict(entry)})
            prev = digest
            if len(batch) == 20_000:
                conn.execute(insert(AuditEntry), batch)
                batch.clear()
                print(f"\r  built {seq:,} entries", end="", flush=True)
        if batch:
            conn.execute(insert(AuditEntry), batch)
    print()
    engine.dispose()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    opts = parser.parse_args()
    print(f"# audit bench: {opts.entries:,} entries, {os.cpu_count()} cores\n")
    print(
        "| database | build s | verify s, first | entries/s, first | verify s, again | entries/s, again |\n"
        "|---|---|---|---|---|---|"
    )
    for db in opts.databases.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            schema = ""
            if db == "postgresql":
                schema = f"bench_{secrets.token_hex(4)}"
                with create_engine(PG_URL).begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{schema}"'))
                url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
            else:
                url = f"sqlite:///{Path(tmp) / 'audit.db'}"
            try:
                upgrade(url)
                built = build(url, opts.entries)
                sessions = session_factory(make_engine(url))
                cells = [db, f"{built:.1f}"]
                for _ in range(2):
                    started = time.perf_counter()
                    with sessions() as session:
                        report = verify_database(session, [], {})
                    took = time.perf_counter() - started
                    assert report.ok and report.entries == opts.entries, report
                    cells += [f"{took:.1f}", f"{report.entries / took:,.0f}"]
                print("| " + " | ".join(cells) + " |")
            finally:
                if schema:
                    with create_engine(PG_URL).begin() as conn:
                        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
