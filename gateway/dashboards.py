"""Figures behind the leads' dashboard: decisions per gate over time, denials by reason, occupancy over time.

Counting is done by the database (GROUP BY a time bucket), so a month of a million decisions costs one scan of
the matching rows, not a million Python objects. Occupancy over time is replayed from the audit's passage
events rather than from the positions table: positions hold only where each holder is *now*, while the audit
keeps every confirmed passage in order (hash-chained), which is exactly the history to rebuild.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Integer, cast, func, select
from sqlalchemy.orm import Session

from gateway.audit_search import Filter, conditions
from gateway.db.models import AuditEntry
from gateway.site import OUTSIDE, Site

BUCKETS = (300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)  # seconds
MAX_POINTS = 96


def bucket_for(since: dt.datetime, until: dt.datetime) -> int:
    """The smallest bucket that draws the range in at most MAX_POINTS points."""
    span = (until - since).total_seconds()
    return next((b for b in BUCKETS if span / b <= MAX_POINTS), BUCKETS[-1])


def _bucket(session: Session, seconds: int) -> ColumnElement[Any]:
    a = AuditEntry.at
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.floor(func.extract("epoch", a) / seconds), BigInteger)
    return cast(func.strftime("%s", a), Integer) / seconds  # SQLite: integer division


@dataclass(frozen=True)
class TimeSeries:
    times: list[dt.datetime]  # start of each bucket
    series: dict[str, list[float]]


def _times(since: dt.datetime, until: dt.datetime, seconds: int) -> list[int]:
    first = int(since.timestamp()) // seconds
    last = (int(until.timestamp()) - 1) // seconds
    return list(range(first, last + 1))


def decisions_per_gate(session: Session, site: Site, f: Filter, since: dt.datetime, until: dt.datetime) -> TimeSeries:
    seconds = bucket_for(since, until)
    view = dataclasses.replace(f, kind="decision", since=since, until=until)
    bucket = _bucket(session, seconds).label("bucket")
    rows = session.execute(
        select(AuditEntry.gate, bucket, func.count()).where(*conditions(view, site)).group_by(AuditEntry.gate, bucket)
    ).all()
    keys = _times(since, until, seconds)
    index = {k: i for i, k in enumerate(keys)}
    series: dict[str, list[float]] = {}
    for gate, b, count in rows:
        if int(b) in index:
            series.setdefault(gate or "(none)", [0.0] * len(keys))[index[int(b)]] += count
    return TimeSeries(_stamps(keys, seconds), dict(sorted(series.items())))


def denials_by_reason(
    session: Session, site: Site, f: Filter, since: dt.datetime, until: dt.datetime
) -> dict[str, int]:
    view = dataclasses.replace(f, kind="decision", decision="deny", since=since, until=until)
    rows = session.execute(
        select(AuditEntry.reason, func.count()).where(*conditions(view, site)).group_by(AuditEntry.reason)
    ).all()
    return {reason or "(none)": int(count) for reason, count in rows}


def occupancy(
    session: Session, site: Site, since: dt.datetime, until: dt.datetime, zones: list[str] | None = None
) -> TimeSeries:
    """Holders in each zone at the end of each bucket, replayed from every passage before `until`.

    A passage moves its holder into the zone on the far side of the reader they used (as `positions` does).
    The replay starts at the first passage ever, so the level at `since` is right; it keeps one zone per
    holder in memory and streams the passages.
    """
    seconds = bucket_for(since, until)
    keys = _times(since, until, seconds)
    ends = [dt.datetime.fromtimestamp((k + 1) * seconds, dt.UTC) for k in keys]
    a = AuditEntry
    passages = session.execute(
        select(a.at, a.holder_id, a.reader)
        .where(a.kind == "gate_event", a.reason == "passage", a.holder_id != "", a.at < until)
        .order_by(a.at, a.seq)
        .execution_options(yield_per=5000)
    )
    where: dict[str, str] = {}
    counts: Counter[str] = Counter()
    shown = zones if zones is not None else [z for z in site.zones]
    series: dict[str, list[float]] = {z: [] for z in shown}
    i = 0

    def sample_until(t: dt.datetime | None) -> None:
        nonlocal i
        while i < len(ends) and (t is None or ends[i] <= t):
            for z in shown:
                series[z].append(float(counts[z]))
            i += 1

    for at, holder, reader_code in passages:
        reader = site.readers.get(reader_code)
        if reader is None:
            continue
        sample_until(at)
        zone = site.target_zone(reader)
        old = where.get(holder)
        if old == zone:
            continue
        if old is not None and old != OUTSIDE:
            counts[old] -= 1
        where[holder] = zone
        if zone != OUTSIDE:
            counts[zone] += 1
    sample_until(None)
    return TimeSeries(ends, series)  # each level as it stood at the end of its bucket


def _stamps(keys: list[int], seconds: int) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(k * seconds, dt.UTC) for k in keys]
