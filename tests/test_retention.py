"""Retention of personal data on SQLite and PostgreSQL: after the period, names, photos and references are gone, the
audit still verifies, the run is audited, and a lead who knows a name finds the person through the keyed hash."""

from __future__ import annotations

import datetime as dt
import secrets
import stat

from click.testing import CliRunner
from sqlalchemy import select

from gateway import checkpoints, contract, retention
from gateway.audit_verify import verify_database
from gateway.cli import main
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry, Holder, Qualification
from gateway.instance import load_settings
from tests.factories import badged_holder, decision_service

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)  # the CLI runs on the real clock
DAY = dt.timedelta(days=1)


def _cli(instance, *args: str) -> str:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(main, [*args, "--instance", str(instance.folder)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _holders(instance, site):  # type: ignore[no-untyped-def]
    """Léa Martin (badge expired 40 days ago, was seen at a gate), Hugo Garnier (badge revoked 35 days ago),
    Chloe Lefevre (badge still valid), Noah Petit (badge expired 10 days ago)."""
    then = NOW - 45 * DAY
    martin = badged_holder(instance, site, ["STADIUM-PERIMETER"], then, name=("Martin", "Léa"), valid=(-DAY, 5 * DAY))
    decision_service(instance, site, lambda: then).answer(
        contract.DecisionRequest("STA-G1-IN", secrets.token_hex(16), martin.token, 0)
    )
    garnier = badged_holder(
        instance,
        site,
        ["STADIUM-PERIMETER"],
        NOW - 35 * DAY,
        name=("Garnier", "Hugo"),
        valid=(-DAY, 100 * DAY),
        revoked=True,
    )
    lefevre = badged_holder(
        instance, site, ["STADIUM-PERIMETER"], NOW - 60 * DAY, name=("Lefevre", "Chloe"), valid=(-DAY, 90 * DAY)
    )
    petit = badged_holder(
        instance, site, ["STADIUM-PERIMETER"], NOW - 20 * DAY, name=("Petit", "Noah"), valid=(-DAY, 10 * DAY)
    )
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s, s.begin():
        h = s.get(Holder, martin.holder_id)
        assert h is not None
        h.photo, h.photo_type, h.reference = b"\xff\xd8 a photo", "image/jpeg", "BPOL-4711"
        s.add(Qualification(holder_id=h.id, kind="firearm", reference="LIC-99-1234"))
    return sessions, martin.holder_id, garnier.holder_id, lefevre.holder_id, petit.holder_id


def _intact(sessions, instance) -> bool:  # type: ignore[no-untyped-def]
    pub = instance.keyring.decision_signing.public_key()
    with sessions() as s:
        return verify_database(s, [], {contract.key_id(pub): pub}).ok


def test_retention_removes_personal_data_and_the_audit_still_verifies(instance, site) -> None:  # type: ignore[no-untyped-def]
    sessions, martin, garnier, lefevre, petit = _holders(instance, site)
    with sessions() as s:  # a checkpoint signed before retention must still match after it
        checkpoints.checkpoint_now(
            s, instance.folder / "audit-checkpoints.jsonl", instance.keyring.decision_signing, NOW
        )

    assert "Usage" not in _cli(instance, "retention", "set-days", "30")
    assert load_settings(instance.folder).personal_data_days == 30

    dry = _cli(instance, "retention", "run", "--dry-run")
    assert martin in dry and garnier in dry and lefevre not in dry and petit not in dry
    assert "2 holder(s) would be removed" in dry
    with sessions() as s:
        assert s.get(Holder, martin).family_name == "Martin"  # type: ignore[union-attr]
        assert s.scalar(select(AuditEntry.seq).where(AuditEntry.kind == "retention_run")) is None

    assert "2 holder(s) removed" in _cli(instance, "retention", "run")
    with sessions() as s:
        gone = s.get(Holder, martin)
        assert gone is not None and gone.personal_data_removed_at is not None
        assert (gone.family_name, gone.given_name, gone.reference) == ("", "", "")
        assert (gone.photo, gone.photo_type) == (None, None)
        assert s.scalars(select(Qualification.reference).where(Qualification.holder_id == martin)).all() == [""]
        assert gone.identity_hmac and len(gone.identity_hmac) == 64
        assert s.get(Holder, garnier).given_name == ""  # type: ignore[union-attr]
        assert s.get(Holder, lefevre).family_name == "Lefevre"  # type: ignore[union-attr]
        assert s.get(Holder, petit).family_name == "Petit"  # type: ignore[union-attr]
        removed = s.scalars(select(AuditEntry.holder_id).where(AuditEntry.kind == "personal_data_removed")).all()
        assert sorted(removed) == sorted([martin, garnier])
        run = s.scalar(select(AuditEntry).where(AuditEntry.kind == "retention_run"))
        assert run is not None and "2 holder(s)" in run.detail and "(30 days)" in run.detail
        names = ("Martin", "Léa", "Garnier", "Hugo", "BPOL-4711", "LIC-99")
        assert not any(n in f"{e.detail}{e.operator}" for e in s.scalars(select(AuditEntry)) for n in names)
    assert _intact(sessions, instance)
    assert "audit intact" in _cli(instance, "audit", "verify")  # with the checkpoint written before

    key_file = instance.folder / retention.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    again = _cli(instance, "retention", "run")  # nothing left to remove; the run is still logged
    assert "0 holder(s) removed" in again
    with sessions() as s:
        assert len(s.scalars(select(AuditEntry).where(AuditEntry.kind == "retention_run")).all()) == 2


def test_a_lead_who_knows_the_name_finds_a_removed_person(instance, site) -> None:  # type: ignore[no-untyped-def]
    sessions, martin, _, lefevre, _ = _holders(instance, site)
    _cli(instance, "retention", "set-days", "30")
    _cli(instance, "retention", "run")

    found = _cli(instance, "retention", "lookup", "--family-name", "MARTIN", "--given-name", "lea")
    assert martin in found and "personal data removed" in found
    assert "1 decision(s), 1 granted" in found and "STA-G1" in found
    nobody = _cli(instance, "retention", "lookup", "--family-name", "Martin", "--given-name", "Leo")
    assert "nobody of that name" in nobody
    still = _cli(instance, "retention", "lookup", "--family-name", "Lefèvre", "--given-name", "Chloé")
    assert lefevre in still and "registered" in still
    with sessions() as s:
        logged = s.scalars(select(AuditEntry.detail).where(AuditEntry.kind == "person_lookup")).all()
    assert len(logged) == 3 and not any("Martin" in d or "Lef" in d for d in logged)  # the name is not logged

    # Without the instance's key, the hash says nothing: another key finds nobody.
    with sessions() as s:
        assert retention.lookup(s, b"k" * 32, "Martin", "Léa") == []
    assert _intact(sessions, instance)


def test_retention_refuses_to_run_without_a_period(instance) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(main, ["retention", "run", "--instance", str(instance.folder)])
    assert result.exit_code != 0 and "no retention period set" in result.output


def test_names_are_compared_without_case_accents_or_extra_spaces() -> None:
    key = bytes(32)
    assert retention.identity_hmac(key, " Lefèvre ", "Chloé") == retention.identity_hmac(key, "LEFEVRE", "chloe")
    assert retention.identity_hmac(key, "Martin", "Lea") != retention.identity_hmac(key, "Lea", "Martin")
    assert retention.identity_hmac(key, "Martin", "Lea") != retention.identity_hmac(bytes([1] * 32), "Martin", "Lea")
