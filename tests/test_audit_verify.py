"""Tamper evidence: any edit, deletion, insertion, reordering or truncation is found and named (both databases)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from gateway import audit
from gateway.audit_verify import (
    checkpoint_now,
    export_range,
    read_checkpoints,
    verify_database,
    verify_export,
)
from gateway.contract import key_id
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry

ROOT = Path(__file__).resolve().parent.parent
T0 = dt.datetime(2026, 7, 24, 2, 0, tzinfo=dt.UTC)


@pytest.fixture
def chain(instance):  # type: ignore[no-untyped-def]
    """20 entries of several kinds, checkpointed at 15 and at 20."""
    engine = make_engine(instance.settings.database_url)
    sessions = session_factory(engine)
    cp_file = instance.folder / "audit-checkpoints.jsonl"
    key = instance.keyring.decision_signing
    for i in range(1, 21):
        with sessions() as s, s.begin():
            audit.append(
                s,
                audit.Entry(
                    kind="decision" if i % 3 else "gate_event",
                    ref=f"{i:032x}",
                    at=T0 + dt.timedelta(minutes=i),
                    recorded_at=T0 + dt.timedelta(minutes=i, seconds=1),
                    reader="STA-G6-IN",
                    gate="STA-G6",
                    badge_id=f"badge{i:04d}",
                    holder_id=f"holder{i:03d}",
                    allow=bool(i % 2),
                    reason="granted",
                    mode="online",
                    detail=f"entry {i}",
                    expires_ms=1_800_000_000_000 + i,
                ),
            )
        if i in (15, 20):
            with sessions() as s:
                checkpoint_now(s, cp_file, key, T0 + dt.timedelta(minutes=i))
    pub = key.public_key()
    yield sessions, cp_file, {key_id(pub): pub}
    engine.dispose()


def verify(chain):  # type: ignore[no-untyped-def]
    sessions, cp_file, keys = chain
    with sessions() as s:
        return verify_database(s, read_checkpoints(cp_file), keys)


def test_an_untouched_chain_verifies(chain) -> None:  # type: ignore[no-untyped-def]
    report = verify(chain)
    assert (report.ok, report.entries, report.checkpoints) == (True, 20, 2)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "badge_issued"),
        ("ref", "f" * 32),
        ("at", T0),
        ("recorded_at", T0),
        ("reader", "STA-G1-IN"),
        ("gate", "STA-G1"),
        ("badge_id", "other"),
        ("holder_id", "other"),
        ("operator", "someone"),
        ("allow", None),
        ("reason", "revoked"),
        ("mode", "forced"),
        ("detail", "entry 7 "),
        ("expires_ms", 1),
    ],
)
def test_editing_any_field_is_found_at_that_entry(chain, field: str, value: object) -> None:  # type: ignore[no-untyped-def]
    sessions = chain[0]
    with sessions() as s, s.begin():
        s.execute(update(AuditEntry).where(AuditEntry.seq == 7).values({field: value}))
    report = verify(chain)
    assert (report.ok, report.bad_seq) == (False, 7)
    assert "entry 7" in (report.problem or "")


def test_deleting_an_entry_is_found(chain) -> None:  # type: ignore[no-untyped-def]
    with chain[0]() as s, s.begin():
        s.execute(delete(AuditEntry).where(AuditEntry.seq == 12))
    report = verify(chain)
    assert (report.ok, report.bad_seq) == (False, 12) and "missing" in (report.problem or "")


def test_inserting_an_entry_is_found(chain) -> None:  # type: ignore[no-untyped-def]
    sessions = chain[0]
    with sessions() as s, s.begin():
        s.execute(update(AuditEntry).where(AuditEntry.seq >= 9).values(seq=AuditEntry.seq + 1000))
        s.flush()
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.seq >= 1009).order_by(AuditEntry.seq)))
        for row in rows:
            row.seq -= 999
        s.flush()
        forged = audit.Entry(kind="decision", ref="e" * 32, at=T0, recorded_at=T0, allow=True, reason="granted")
        prev = s.scalar(select(AuditEntry.entry_hash).where(AuditEntry.seq == 8))
        s.add(
            AuditEntry(
                seq=9, prev_hash=prev, entry_hash=audit.entry_hash(prev, 9, forged), **dataclasses.asdict(forged)
            )
        )
    report = verify(chain)
    assert (report.ok, report.bad_seq) == (False, 10)


def test_reordering_entries_is_found(chain) -> None:  # type: ignore[no-untyped-def]
    sessions = chain[0]
    with sessions() as s, s.begin():
        s.execute(update(AuditEntry).where(AuditEntry.seq == 4).values(seq=-4))
        s.execute(update(AuditEntry).where(AuditEntry.seq == 5).values(seq=4))
        s.execute(update(AuditEntry).where(AuditEntry.seq == -4).values(seq=5))
    report = verify(chain)
    assert (report.ok, report.bad_seq) == (False, 4)


def test_cutting_entries_off_the_end_is_found_against_the_last_checkpoint(chain) -> None:  # type: ignore[no-untyped-def]
    with chain[0]() as s, s.begin():
        s.execute(delete(AuditEntry).where(AuditEntry.seq > 17))
    report = verify(chain)
    assert (report.ok, report.bad_seq) == (False, 18) and "18..20" in (report.problem or "")


def test_a_rewritten_chain_does_not_match_the_signed_checkpoint(chain) -> None:  # type: ignore[no-untyped-def]
    """Whoever edits an entry and recomputes every later hash still contradicts the signed checkpoint."""
    sessions = chain[0]
    with sessions() as s, s.begin():
        rows = list(s.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
        rows[2].reason = "revoked"
        prev = rows[1].entry_hash
        for row in rows[2:]:
            row.prev_hash = prev
            row.entry_hash = audit.entry_hash(prev, row.seq, audit.as_entry(row))
            prev = row.entry_hash
    report = verify(chain)
    assert (report.ok, report.bad_seq) == (False, 15) and "checkpoint" in (report.problem or "")


def test_an_exported_range_verifies_with_the_public_key_alone(chain, instance) -> None:  # type: ignore[no-untyped-def]
    sessions, cp_file, keys = chain
    out = io.StringIO()
    with sessions() as s:
        count = export_range(s, 5, 12, read_checkpoints(cp_file), out, instance.keyring.decision_signing, T0)
    assert count == 8
    lines = out.getvalue().splitlines()
    assert verify_export(lines, keys).ok
    tampered = [line.replace('"detail":"entry 9"', '"detail":"entry 9!"') for line in lines]
    report = verify_export(tampered, keys)
    assert (report.ok, report.bad_seq) == (False, 9)
    assert not verify_export(lines[:-2] + lines[-1:], keys).ok  # an entry dropped from the middle


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_exits_non_zero_and_names_the_entry(chain, instance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = [sys.executable, "-m", "gateway", "audit"]
    ok = subprocess.run([*base, "verify", "--instance", str(instance.folder)], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and "20 entries, 2 checkpoints" in ok.stdout
    export = tmp_path / "range.jsonl"
    subprocess.run(
        [*base, "export", "--instance", str(instance.folder), "--from", "3", "--to", "18", "--out", str(export)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    pem = instance.folder / "keys" / "decision.pub.pem"
    other = subprocess.run(
        [*base, "verify-export", str(export), "--public-key", str(pem)], cwd=ROOT, capture_output=True, text=True
    )
    assert other.returncode == 0 and "16 entries" in other.stdout
    with chain[0]() as s, s.begin():
        s.execute(update(AuditEntry).where(AuditEntry.seq == 11).values(allow=True, reason="granted", detail="x"))
    broken = subprocess.run(
        [*base, "verify", "--instance", str(instance.folder)], cwd=ROOT, capture_output=True, text=True
    )
    assert broken.returncode == 1 and "entry 11" in broken.stderr


# --- long chains are verified in parallel ranges (here forced on 20 entries: two ranges, 1..10 and 11..20) ---


@pytest.fixture
def in_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import audit_ranges

    monkeypatch.setattr(audit_ranges, "PARALLEL_FROM", 5)
    monkeypatch.setattr(audit_ranges.os, "cpu_count", lambda: 2)


def test_ranges_verify_an_untouched_chain(chain, in_ranges) -> None:  # type: ignore[no-untyped-def]
    report = verify(chain)
    assert (report.ok, report.entries, report.checkpoints) == (True, 20, 2)


@pytest.mark.parametrize("seq", [3, 11, 20])
def test_ranges_find_an_edit_in_either_range(chain, in_ranges, seq: int) -> None:  # type: ignore[no-untyped-def]
    with chain[0]() as s, s.begin():
        s.execute(update(AuditEntry).where(AuditEntry.seq == seq).values(detail="changed"))
    report = verify(chain)
    assert (report.ok, report.bad_seq) == (False, seq)


@pytest.mark.parametrize("seq", [10, 11])
def test_ranges_find_a_deletion_at_the_seam(chain, in_ranges, seq: int) -> None:  # type: ignore[no-untyped-def]
    with chain[0]() as s, s.begin():
        s.execute(delete(AuditEntry).where(AuditEntry.seq == seq))
    report = verify(chain)
    assert (report.ok, report.bad_seq) == (False, seq) and "missing" in (report.problem or "")


def test_ranges_find_entries_swapped_across_the_seam(chain, in_ranges) -> None:  # type: ignore[no-untyped-def]
    with chain[0]() as s, s.begin():
        s.execute(update(AuditEntry).where(AuditEntry.seq == 10).values(seq=-10))
        s.execute(update(AuditEntry).where(AuditEntry.seq == 11).values(seq=10))
        s.execute(update(AuditEntry).where(AuditEntry.seq == -10).values(seq=11))
    report = verify(chain)
    assert (report.ok, report.bad_seq) == (False, 10)


def test_ranges_find_a_second_range_rewritten_to_start_a_new_chain(chain, in_ranges) -> None:  # type: ignore[no-untyped-def]
    """Entries 11..20 rehashed from a forged predecessor: each hash checks out, but the seam does not join."""
    sessions = chain[0]
    with sessions() as s, s.begin():
        prev = "f" * 64
        for row in s.scalars(select(AuditEntry).where(AuditEntry.seq >= 11).order_by(AuditEntry.seq)):
            row.prev_hash = prev
            row.entry_hash = prev = audit.entry_hash(prev, row.seq, audit.as_entry(row))
    report = verify(chain)
    assert (report.ok, report.bad_seq) == (False, 11) and "does not link" in (report.problem or "")


def test_ranges_report_a_predecessor_hash_that_is_not_hex_at_a_range_start(chain, in_ranges) -> None:  # type: ignore[no-untyped-def]
    # Entry 11 opens the second range, whose first link is taken as given until the ranges are joined.
    with chain[0]() as s, s.begin():
        s.execute(update(AuditEntry).where(AuditEntry.seq == 11).values(prev_hash="zz" * 32))
    report = verify(chain)
    assert (report.ok, report.bad_seq) == (False, 11)
