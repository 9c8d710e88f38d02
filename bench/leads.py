"""Leads' views benchmark: filtered search p95 and streamed CSV export over N audit entries.

    .venv/bin/python bench/leads.py [--entries 1000000] [--database URL] [--repeat 20] [--keep]

Without --database it uses a fresh SQLite file in a temporary folder. With a PostgreSQL URL it works in a new
private schema of that database, dropped at the end (unless --keep). It fills the audit with realistic
entries (decisions across every gate and reader of zones.yaml, holders of 40 organisations, a month of days,
passages and alarms) through gateway.audit.append_many, so the hash chain is valid; then times the search
page (gateway.audit_search.search, 50 rows, newest first) over a set of representative filters, and a full CSV
export (and JSON) through gateway.exports, reporting rows/s and peak memory. Copy the printed table into
docs/performance.md ("Leads' search and exports").
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import resource
import secrets
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, insert, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from gateway import audit, exports  # noqa: E402
from gateway.audit_search import Filter, batches, search  # noqa: E402
from gateway.db.engine import make_engine, session_factory, upgrade  # noqa: E402
from gateway.db.models import Holder, Organisation  # noqa: E402
from gateway.site import Site, load_site  # noqa: E402

START = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
DAYS = 30
HOLDERS, ORGANISATIONS = 20_000, 40
FAMILY = ["Martin", "Bernard", "Dubois", "Weber", "Schmidt", "Rossi", "Garcia", "Silva", "Novak", "Kowalski"]
GIVEN = ["Lea", "Hugo", "Jonas", "Ana", "Marco", "Sofia", "Piotr", "Ines", "Lukas", "Chloe"]
DENIALS = (
    ["zone_not_permitted"] * 5
    + ["expired"] * 3
    + ["anti_passback"] * 3
    + ["outside_schedule"] * 2
    + [
        "revoked",
        "qualification_missing",
    ]
)
ALARMS = ["door_forced", "door_held_open", "tamper"]


def database(url: str | None, tmp: Path) -> tuple[str, str]:
    """The URL to use and the PostgreSQL schema made for it ("" for SQLite)."""
    if url is None:
        return f"sqlite:///{tmp / 'leads.db'}", ""
    if make_url(url).get_backend_name() != "postgresql":
        return url, ""
    schema = f"bench_leads_{secrets.token_hex(4)}"
    with create_engine(url).begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}", schema


def fill_people(sessions: sessionmaker[Session]) -> list[tuple[str, str]]:
    """Organisations and holders (bulk insert); returns (holder id, badge id) pairs."""
    now = START - dt.timedelta(days=7)
    with sessions() as s, s.begin():
        s.execute(
            insert(Organisation),
            [
                {"id": i + 1, "code": f"ORG-{i:02d}", "name": f"Contingent {i}", "kind": "police", "country": "FR"}
                for i in range(ORGANISATIONS)
            ],
        )
        rows = [
            {
                "id": f"h{i:07d}",
                "organisation_id": i % ORGANISATIONS + 1,
                "family_name": f"{FAMILY[i % 10]}{i // 100}",
                "given_name": GIVEN[(i // 10) % 10],
                "country": "FR",
                "role": "police",
                "status": "active",
                "created_at": now,
                "reference": "",
            }
            for i in range(HOLDERS)
        ]
        s.execute(insert(Holder), rows)
    return [(f"h{i:07d}", f"b{i:07d}") for i in range(HOLDERS)]


def entries(site: Site, people: list[tuple[str, str]], count: int) -> Iterator[audit.Entry]:
    """Decisions (about 8 % denied, 2 % offline), passages after most grants, and a few alarms."""
    rng = random.Random(7)
    readers = list(site.readers.values())
    step = DAYS * 86400 / max(count, 1)
    made = 0
    while made < count:
        at = START + dt.timedelta(seconds=made * step)
        reader = rng.choice(readers)
        holder, badge = people[int(rng.paretovariate(1.2) * 50) % len(people)]  # some holders pass a lot
        roll = rng.random()
        if roll < 0.004:
            yield audit.Entry(kind="gate_event", at=at, recorded_at=at, ref=f"{reader.gate}:a{made}",
                              gate=reader.gate, reason=rng.choice(ALARMS), detail='{"seq": 1}')  # fmt: skip
            made += 1
            continue
        allow = roll > 0.08
        mode = "offline" if rng.random() < 0.02 else "online"
        nonce = secrets.token_hex(16)
        yield audit.Entry(
            kind="decision",
            at=at,
            recorded_at=at,
            ref=nonce,
            reader=reader.code,
            gate=reader.gate,
            badge_id=badge,
            holder_id=holder,
            allow=allow,
            reason="granted" if allow else rng.choice(DENIALS),
            mode=mode,
            detail=f"threat level vigilance; into {site.target_zone(reader)}",
            expires_ms=int(at.timestamp() * 1000) + 5000,
        )
        made += 1
        if allow and made < count and rng.random() < 0.9:
            passed = at + dt.timedelta(seconds=2)
            yield audit.Entry(kind="gate_event", at=passed, recorded_at=passed, ref=f"{reader.gate}:p{made}",
                              reader=reader.code, gate=reader.gate, badge_id=badge, holder_id=holder,
                              reason="passage", detail=f'{{"nonce": "{nonce}"}}')  # fmt: skip
            made += 1


def fill(sessions: sessionmaker[Session], site: Site, people: list[tuple[str, str]], count: int) -> float:
    started = time.perf_counter()
    batch: list[audit.Entry] = []
    done = 0
    for entry in entries(site, people, count):
        batch.append(entry)
        if len(batch) == 20_000:
            with sessions() as s, s.begin():
                audit.append_many(s, batch)
            done += len(batch)
            batch.clear()
            print(f"\r  filled {done:,} entries", end="", flush=True, file=sys.stderr)
    if batch:
        with sessions() as s, s.begin():
            audit.append_many(s, batch)
    print(file=sys.stderr)
    return time.perf_counter() - started


def filters(site: Site, people: list[tuple[str, str]]) -> dict[str, tuple[Filter, int | None]]:
    """Representative searches (filter, and the cursor of a deep page or None for the first page)."""
    day = START + dt.timedelta(days=DAYS // 2)
    holder, badge = people[60]
    next_day = day + dt.timedelta(days=1)
    busy = Filter(kind="decision", gate="STA-G1")
    return {
        "newest decisions": (Filter(kind="decision"), None),
        "gate": (busy, None),
        "gate, deep page": (busy, None),  # cursor filled in by measure()
        "holder trail": (Filter(holder=holder), None),
        "badge": (Filter(kind="decision", badge=badge), None),
        "holder name": (Filter(kind="decision", name="weber1"), None),
        "organisation": (Filter(kind="decision", organisation="ORG-07"), None),
        "zone (with children)": (Filter(kind="decision", zone="STADIUM-BOWL"), None),
        "denied": (Filter(kind="decision", decision="deny"), None),
        "rare reason": (Filter(kind="decision", reason="revoked"), None),
        "offline": (Filter(kind="decision", mode="offline"), None),
        "one day": (Filter(kind="decision", since=day, until=next_day), None),
        "org + denied + day": (
            Filter(kind="decision", organisation="ORG-03", decision="deny", since=day, until=next_day),
            None,
        ),
        "gate alarms": (Filter(kind="gate_event", gate="STA-G2", reason="door_forced"), None),
    }


def measure(sessions: sessionmaker[Session], site: Site, cases: dict[str, tuple[Filter, int | None]], repeat: int
            ) -> dict[str, list[float]]:  # fmt: skip
    times: dict[str, list[float]] = {}
    with sessions() as s:
        deep_filter = cases["gate, deep page"][0]
        cursor = None
        for _ in range(40):  # page 40 of the gate's decisions
            cursor = search(s, site, deep_filter, cursor, 50).next_cursor
        cases["gate, deep page"] = (deep_filter, cursor)
    for name, (f, before) in cases.items():
        times[name] = []
        for _ in range(repeat):
            with sessions() as s:
                started = time.perf_counter()
                page = search(s, site, f, before, 50)
                times[name].append((time.perf_counter() - started) * 1000)
        times[name].append(float(len(page.rows)))  # last item: rows on the page (not a time)
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def export(sessions: sessionmaker[Session], site: Site, fmt: str, trace: bool) -> tuple[int, float, float]:
    """A full export of every entry to /dev/null: rows, seconds, peak traced MB (0 without tracing)."""
    rows = 0

    dialect = sessions.kw["bind"].dialect.name

    def counted() -> Iterator[Sequence[Any]]:
        nonlocal rows
        for batch in batches(
            sessions, site, Filter(), columns=exports.columns(fmt, dialect), driver_rows=fmt == "csv"
        ):
            rows += len(batch)
            yield batch

    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    with open(os.devnull, "w", encoding="utf-8") as sink:
        for chunk in exports.chunks(fmt, counted()):
            sink.write(chunk)
    took = time.perf_counter() - started
    peak = 0.0
    if trace:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return rows, took, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--database", help="SQLAlchemy URL (default: a fresh SQLite file)")
    parser.add_argument("--repeat", type=int, default=20, help="runs of each search")
    parser.add_argument("--site", default=str(ROOT / "zones.yaml"))
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema (its name is printed)")
    opts = parser.parse_args()
    site = load_site(opts.site)
    with tempfile.TemporaryDirectory() as tmp:
        url, schema = database(opts.database, Path(tmp))
        try:
            upgrade(url)
            engine = make_engine(url)
            sessions = session_factory(engine)
            with sessions() as s:
                if s.scalar(select(func.count()).select_from(Holder)):
                    sys.exit("the database already holds holders: give an empty one")
            people = fill_people(sessions)
            built = fill(sessions, site, people, opts.entries)
            if engine.dialect.name == "postgresql":
                with engine.begin() as conn:  # statistics are transactional: commit them
                    conn.execute(text("ANALYZE"))  # what autovacuum does on its own in production
            print(f"# leads bench: {opts.entries:,} entries on {engine.dialect.name}, {os.cpu_count()} cores"
                  f"{f', schema {schema}' if schema else ''}; filled in {built:.1f} s\n")  # fmt: skip
            print("| search (50 rows, newest first) | rows | p50 ms | p95 ms |\n|---|---|---|---|")
            everything: list[float] = []
            for name, values in measure(sessions, site, filters(site, people), opts.repeat).items():
                took, rows = values[:-1], int(values[-1])
                everything += took
                print(f"| {name} | {rows} | {statistics.median(took):.1f} | {p95(took):.1f} |")
            print(f"| **all searches** | | {statistics.median(everything):.1f} | **{p95(everything):.1f}** |\n")
            print("| export | rows | s | rows/s | peak traced MB | max RSS MB |\n|---|---|---|---|---|---|")
            for fmt in ("csv", "json"):
                rows, seconds, _ = export(sessions, site, fmt, trace=False)
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                _, _, peak = export(sessions, site, fmt, trace=True)
                print(f"| {fmt} | {rows:,} | {seconds:.1f} | {rows / seconds:,.0f} | {peak:.1f} | {rss:.0f} |")
            engine.dispose()
        finally:
            if schema and not opts.keep:
                assert opts.database is not None
                with create_engine(opts.database).begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
