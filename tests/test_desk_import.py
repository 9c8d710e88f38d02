"""CSV import of a contingent: every row checked first, every bad row reported with its line, nothing imported
from a file with errors unless asked, and never half a file."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select

from gateway import holders as registry
from gateway import holders_csv
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry, Holder
from gateway.holders import Actor, DeskError

NOW = dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC)
HEADER = "family_name,given_name,role,country,reference,qualifications,zones,first_day,last_day,shifts\n"
GOOD = [
    "Keller,Jana,police,DE,BP-1,firearm_authorisation:2026-12-31:WA-77,P C,2026-07-18,2026-08-12,mon-fri 06:00-14:00\n",
    "Schmidt,Jonas,police,,BP-2,,P,2026-07-18,2026-08-12,\n",
    '"Öztürk, Jr",Ayşe,dog_handler,TR,BP-3,,,,,\n',
]


@pytest.fixture
def sessions(instance):  # type: ignore[no-untyped-def]
    maker = session_factory(make_engine(instance.settings.database_url))
    with maker() as s, s.begin():
        registry.create_organisation(s, "BPOL", "Bundespolizei", "police", "DE")
    return maker


def run(sessions, site, data: str | bytes, good_rows_only: bool = False, progress=holders_csv._quiet):  # type: ignore[no-untyped-def]
    raw = data.encode() if isinstance(data, str) else data
    with sessions() as s, s.begin():
        org = registry.find_organisation(s, "BPOL")
        checked = holders_csv.check_file(raw, site, "PAR24", s, org, org.country, progress)
        result = holders_csv.import_checked(
            s, site, org, checked, NOW, Actor("clerk"), "bpol.csv", good_rows_only, progress
        )
    return checked, result


def count(sessions) -> int:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Holder)) or 0


def test_a_clean_file_imports_every_row_with_its_assignment_and_one_audit_entry(sessions, site) -> None:  # type: ignore[no-untyped-def]
    _, result = run(sessions, site, HEADER + "".join(GOOD))
    assert result.imported == 3 and result.skipped_lines == []
    with sessions() as s:
        keller = s.scalar(select(Holder).where(Holder.reference == "BP-1"))
        assert keller is not None and keller.country == "DE" and keller.organisation.code == "BPOL"
        assert [q.kind for q in keller.qualifications] == ["firearm_authorisation"]
        a = registry.assignment_of(s, keller.id)
        assert a is not None and a.zone_codes == ["STADIUM-PERIMETER", "STADIUM-CONCOURSE"]
        assert registry.format_shifts(a.shifts) == "mon-fri 06:00-14:00"
        schmidt = s.scalar(select(Holder).where(Holder.reference == "BP-2"))
        assert schmidt is not None and schmidt.country == "DE"  # the organisation's country by default
        [entry] = s.scalars(select(AuditEntry).where(AuditEntry.kind == "holders_imported")).all()
        assert entry.detail == "3 holder(s) into BPOL from bpol.csv" and entry.operator == "clerk"


def test_every_bad_row_is_reported_with_its_line_and_nothing_is_imported(sessions, site) -> None:  # type: ignore[no-untyped-def]
    bad = [
        "Dupont,,police,FR,X-1,,,,,\n",  # line 3: no given name
        "Rossi,Marco,carabiniere,IT,X-2,,,,,\n",  # line 4: unknown role
        "Silva,Ana,police,ZZ,X-3,,Q,2026-07-18,2026-08-12,\n",  # line 5: bad country and unknown zone
        "Lee,Min,police,KR,X-4,,P,2026-08-12,2026-07-18,\n",  # line 6: last day before first
        "Kim,Jun,police,KR,BP-1,,,,,\n",  # line 7: reference also on line 2
    ]
    data = HEADER + GOOD[0] + "".join(bad)
    with pytest.raises(DeskError, match=r"5 row\(s\) have problems; nothing was imported"):
        run(sessions, site, data)
    assert count(sessions) == 0
    with sessions() as s:
        checked = holders_csv.check_file(data.encode(), site, "PAR24", s, registry.find_organisation(s, "BPOL"), "DE")
    reasons = {(p.line, p.reason) for p in checked.problems}
    assert (3, "given name is required") in reasons
    assert any(line == 4 and "unknown role 'carabiniere'" in r for line, r in reasons)
    assert any(line == 5 and "not an ISO 3166" in r for line, r in reasons)
    assert (5, "unknown zone 'Q'") in reasons
    assert (6, "the last day is before the first day") in reasons
    assert (7, "reference 'BP-1' is also on line 2") in reasons
    assert checked.bad_lines == [3, 4, 5, 6, 7] and len(checked.good) == 1


def test_asked_to_the_good_rows_are_imported_and_the_bad_ones_reported(sessions, site) -> None:  # type: ignore[no-untyped-def]
    data = HEADER + GOOD[0] + "Rossi,Marco,carabiniere,IT,X-2,,,,,\n" + GOOD[1]
    _, result = run(sessions, site, data, good_rows_only=True)
    assert (result.imported, result.skipped_lines, count(sessions)) == (2, [3], 2)
    with sessions() as s:
        [entry] = s.scalars(select(AuditEntry).where(AuditEntry.kind == "holders_imported")).all()
    assert "1 bad row(s) left out (lines 3)" in entry.detail


def test_importing_the_same_file_twice_is_refused_row_by_row(sessions, site) -> None:  # type: ignore[no-untyped-def]
    run(sessions, site, HEADER + "".join(GOOD))
    with pytest.raises(DeskError, match="3 row"):
        run(sessions, site, HEADER + "".join(GOOD))
    assert count(sessions) == 3


def test_a_failure_midway_leaves_nothing_behind(sessions, site, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(holders_csv, "FLUSH_EVERY", 2)
    rows = [f"Name{i},Given,police,DE,R-{i},,,,,\n" for i in range(7)]

    def crash(stage: str, done: int, total: int) -> None:
        if stage == "importing" and done >= 4:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        run(sessions, site, HEADER + "".join(rows), progress=crash)
    assert count(sessions) == 0


def test_progress_is_reported_for_both_stages(sessions, site) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[str, int, int]] = []
    run(sessions, site, HEADER + "".join(GOOD), progress=lambda *p: seen.append(p))
    assert seen[-1] == ("importing", 3, 3)
    assert any(stage == "checking" and done == total for stage, done, total in seen)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "line 1: the file is empty", id="empty"),
        pytest.param(b"given_name,role\nJana,police\n", "line 1: missing column(s): family_name", id="missing-column"),
        pytest.param(
            b"family_name,given_name,role,rank\nA,B,police,1\n", "unknown column(s): rank", id="unknown-column"
        ),
        pytest.param(b"family_name,given_name,role\n", "a header but no rows", id="no-rows"),
        pytest.param(
            "family_name,given_name,role\nM\xfcller,Jana,police\n".encode("latin-1"),
            "line 2: the file is not UTF-8",
            id="latin-1",
        ),
    ],
)
def test_a_file_that_cannot_be_read_says_why(sessions, site, data: bytes, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DeskError, match=re.escape(message)):
        run(sessions, site, data)
    assert count(sessions) == 0


def test_semicolons_and_a_byte_order_mark_are_fine(sessions, site) -> None:  # type: ignore[no-untyped-def]
    data = "\ufefffamily_name;given_name;role\nDupont;Émile;gendarme\n".encode()
    _, result = run(sessions, site, data)
    assert result.imported == 1


def test_a_row_with_more_cells_than_the_header_is_a_bad_row(sessions, site) -> None:  # type: ignore[no-untyped-def]
    with sessions() as s:
        checked = holders_csv.check_file(
            b"family_name,given_name,role\nA,B,police,extra\n", site, "PAR24", s, None, "DE"
        )
    assert [(p.line, p.reason) for p in checked.problems] == [(2, "1 cell(s) more than the header has")]
