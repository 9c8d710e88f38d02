"""Verification reads fields exactly as they were hashed, whatever they hold: escapes, NULLs, long and non-ASCII
texts, on both databases and both paths (in this process, and in parallel ranges read straight off the driver)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, update

from gateway import audit
from gateway.audit_verify import verify_database
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry

T0 = dt.datetime(2026, 7, 24, 2, 0, 0, 123456, tzinfo=dt.UTC)
# Characters that text protocols escape, NULL markers written as data, and text that is not ASCII.
AWKWARD = [
    "tab\there",
    "line\nbreak",
    "carriage\rreturn",
    "back\\slash",
    "\\N",
    "\\\\N",
    "ends with a backslash\\",
    "\b\f\v\x01\x1f\x7f",
    "Préfecture de police — Île-de-France ✓ 警察 🚓",
    "",
    "x" * 5000,
]

# Any text PostgreSQL can store (not NUL), in fields of the several kinds of column.
stored_text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=60)


def entry(i: int, words: list[str]) -> audit.Entry:
    w = [x[:20] for x in (words * 4)[:4]] if words else [""] * 4  # short columns hold 40 characters or more
    return audit.Entry(
        kind="decision" if i % 2 else "gate_event",
        ref=None if i % 7 == 0 else f"{i:032x}",  # NULLs: ref, allow, expires_ms
        at=T0 + dt.timedelta(seconds=i),
        recorded_at=T0 + dt.timedelta(seconds=i, microseconds=999),
        reader=w[0],
        gate=w[1],
        badge_id="" if i % 3 == 0 else w[2],
        holder_id=w[2],
        operator=w[3] if i % 2 == 0 else "",
        allow=(None if i % 2 == 0 else bool(i % 4 == 1)),
        reason=w[1],
        mode="online",
        detail="".join(words),  # any length
        expires_ms=None if i % 5 == 0 else 1_800_000_000_000 + i,
    )


def fill(sessions, entries: list[audit.Entry]) -> None:  # type: ignore[no-untyped-def]
    with sessions() as s, s.begin():
        s.execute(delete(AuditEntry))
    for e in entries:
        with sessions() as s, s.begin():
            audit.append(s, e)


@pytest.fixture
def sessions(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def in_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import audit_ranges

    monkeypatch.setattr(audit_ranges, "PARALLEL_FROM", 5)
    monkeypatch.setattr(audit_ranges.os, "cpu_count", lambda: 2)


def test_awkward_texts_verify_and_an_edit_among_them_is_found(sessions) -> None:  # type: ignore[no-untyped-def]
    fill(sessions, [entry(i, [w, *AWKWARD]) for i, w in enumerate(AWKWARD, start=1)])
    with sessions() as s:
        report = verify_database(s, [], {})
    assert (report.ok, report.entries) == (True, len(AWKWARD)), report.problem
    with sessions() as s, s.begin():  # one escaped character for another: the same length, a different text
        s.execute(update(AuditEntry).where(AuditEntry.seq == 1).values(reader="tab\nhere"))
    with sessions() as s:
        report = verify_database(s, [], {})
    assert (report.ok, report.bad_seq) == (False, 1)


def test_awkward_texts_verify_in_parallel_ranges(sessions, in_ranges) -> None:  # type: ignore[no-untyped-def]
    fill(sessions, [entry(i, [w, *reversed(AWKWARD)]) for i, w in enumerate(AWKWARD * 2, start=1)])
    with sessions() as s:
        report = verify_database(s, [], {})
    assert (report.ok, report.entries) == (True, 2 * len(AWKWARD)), report.problem
    with sessions() as s, s.begin():
        s.execute(update(AuditEntry).where(AuditEntry.seq == 16).values(detail="\\\\N"))
    with sessions() as s:
        report = verify_database(s, [], {})
    assert (report.ok, report.bad_seq) == (False, 16)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.lists(stored_text, min_size=1, max_size=4), min_size=1, max_size=6))
def test_any_stored_text_verifies(sessions, words: list[list[str]]) -> None:  # type: ignore[no-untyped-def]
    fill(sessions, [entry(i, w) for i, w in enumerate(words, start=1)])
    with sessions() as s:
        report = verify_database(s, [], {})
    assert (report.ok, report.entries) == (True, len(words)), report.problem
