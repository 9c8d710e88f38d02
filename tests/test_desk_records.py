"""The desk's records on a real database (SQLite and PostgreSQL): holders, assignments, issuing, revoking,
suspending, reissuing, key rotation; each audited in the same transaction; the next decision sees it."""

from __future__ import annotations

import datetime as dt
import secrets

import pytest
from sqlalchemy import func, select

from gateway import audit, badges, contract, tokens
from gateway import holders as registry
from gateway.audit_verify import verify_database
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry, Badge, Holder, Revocation
from gateway.decisions import DecisionService
from gateway.holders import Actor, AssignmentDraft, DeskError, HolderDraft, QualificationDraft, ShiftDraft
from gateway.instance import (
    InstanceError,
    load_instance,
    retire_badge_key,
    rotate_badge_key,
)

NOW = dt.datetime(2026, 7, 26, 12, 0, tzinfo=dt.UTC)
CLERK = Actor("clerk1", None)
FIRST, LAST = dt.date(2026, 7, 20), dt.date(2026, 8, 11)


@pytest.fixture
def desk(instance, site):  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s, s.begin():
        registry.create_organisation(s, "GN-75", "Gendarmerie Paris", "gendarmerie", "FR")
    return sessions


def register(desk, site, instance, zones=("STADIUM-PERIMETER", "STADIUM-CONCOURSE"), quals=(), shifts=()):  # type: ignore[no-untyped-def]
    with desk() as s, s.begin():
        org = registry.find_organisation(s, "GN-75")
        h = registry.register(s, site, org, HolderDraft("Martin", "Léa", "FR", "gendarme", "", tuple(quals)), NOW)
        registry.set_assignment(
            s, site, instance.settings.issuer, h, AssignmentDraft(tuple(zones), FIRST, LAST, tuple(shifts)), NOW
        )
        return h.id


def issue(desk, site, instance, holder_id: str, now: dt.datetime = NOW) -> Badge:  # type: ignore[no-untyped-def]
    with desk() as s, s.begin():
        h = s.get(Holder, holder_id)
        return badges.issue_from_assignment(s, site, instance.keyring, instance.settings.issuer, h, now, CLERK)


def entries(desk, kind: str) -> list[AuditEntry]:  # type: ignore[no-untyped-def]
    with desk() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.kind == kind).order_by(AuditEntry.seq)))


def decide(instance, site, token: str, reader: str = "STA-G1-IN") -> str:  # type: ignore[no-untyped-def]
    service = DecisionService(
        site=site,
        keyring=lambda: load_instance(instance.folder).keyring,
        issuer=instance.settings.issuer,
        sessions=session_factory(make_engine(instance.settings.database_url)),
        clock=lambda: NOW,
    )
    request = contract.DecisionRequest(reader=reader, nonce=secrets.token_hex(16), token=token, sent_ms=0)
    return service.answer(request).reason


# --- holders -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("draft", "problem"),
    [
        pytest.param(HolderDraft("", "Léa", "FR", "gendarme"), "family name is required", id="no-family-name"),
        pytest.param(HolderDraft("Martin", " ", "FR", "gendarme"), "given name is required", id="blank-given-name"),
        pytest.param(HolderDraft("Martin", "Léa", "XX", "gendarme"), "not an ISO 3166", id="bad-country"),
        pytest.param(HolderDraft("Martin", "Léa", "FR", "plumber"), "unknown role 'plumber'", id="unknown-role"),
        pytest.param(
            HolderDraft("Martin", "Léa", "FR", "gendarme", "", (QualificationDraft("flying"),)),
            "unknown qualification 'flying'",
            id="unknown-qualification",
        ),
        pytest.param(HolderDraft("Mar\x00tin", "Léa", "FR", "gendarme"), "control character", id="control-char"),
    ],
)
def test_bad_holder_is_refused_with_a_reason(draft: HolderDraft, problem: str, site) -> None:  # type: ignore[no-untyped-def]
    assert any(problem in p for p in registry.holder_problems(draft, site)), registry.holder_problems(draft, site)


def test_the_role_list_is_the_sites(site) -> None:  # type: ignore[no-untyped-def]
    for role in site.roles:
        assert registry.holder_problems(HolderDraft("A", "B", "FR", role), site) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mon-fri 06:00-14:00", [ShiftDraft(("mon", "tue", "wed", "thu", "fri"), "06:00", "14:00")]),
        (
            "sat,sun 10:00-18:00; mon 22:00-24:00",
            [ShiftDraft(("sat", "sun"), "10:00", "18:00"), ShiftDraft(("mon",), "22:00", "24:00")],
        ),
        ("daily 08:00 - 12:00", [ShiftDraft(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "08:00", "12:00")]),
    ],
)
def test_shifts_are_read_from_text(text: str, expected: list[ShiftDraft]) -> None:
    assert registry.parse_shifts(text) == (tuple(expected), [])


@pytest.mark.parametrize("text", ["fri-mon 06:00-14:00", "someday 06:00-14:00", "mon 6-14", "mon"])
def test_bad_shift_text_is_refused(text: str) -> None:
    shifts, problems = registry.parse_shifts(text)
    assert shifts == () and problems and "is not like" in problems[0]


def test_night_shift_must_be_split_at_midnight(site) -> None:  # type: ignore[no-untyped-def]
    draft = AssignmentDraft(("STADIUM-PERIMETER",), FIRST, LAST, (ShiftDraft(("fri",), "22:00", "06:00"),))
    assert any("split a night shift" in p for p in registry.assignment_problems(draft, site, "PAR24"))


def test_zones_are_read_as_zone_or_badge_codes(site) -> None:  # type: ignore[no-untyped-def]
    assert registry.parse_zones("p, STADIUM-CONCOURSE  B", site) == (
        ("STADIUM-PERIMETER", "STADIUM-CONCOURSE", "STADIUM-BOWL"),
        [],
    )
    assert registry.parse_zones("P NOWHERE", site)[1] == ["unknown zone 'NOWHERE'"]


def test_assignment_with_too_many_long_zones_is_refused_before_any_badge(site) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    # A site without badge codes writes whole zone codes into the token: three of them no longer fit the QR.
    bare = dataclasses.replace(site, zones={c: dataclasses.replace(z, badge_code="") for c, z in site.zones.items()})
    zones = ("STADIUM-PERIMETER", "STADIUM-CONCOURSE", "STADIUM-BOWL", "STATION-CHECKPOINT")
    problems = registry.assignment_problems(AssignmentDraft(zones, FIRST, LAST), bare, "PAR24")
    assert any("too long for a version 12 QR code" in p for p in problems)
    assert registry.assignment_problems(AssignmentDraft(zones, FIRST, LAST), site, "PAR24") == []


def test_assignment_is_stored_in_site_days_and_shifts_become_time_windows(desk, site, instance) -> None:  # type: ignore[no-untyped-def]
    shift = ShiftDraft(("mon", "tue"), "06:00", "24:00")
    holder_id = register(desk, site, instance, shifts=[shift])
    with desk() as s:
        a = registry.assignment_of(s, holder_id)
        assert a is not None
        assert registry.local_days(site, a.valid_from, a.valid_until) == (FIRST, LAST)
        # Paris is UTC+2 in summer: the first day starts at 22:00 UTC the evening before
        assert a.valid_from == dt.datetime(2026, 7, 19, 22, 0, tzinfo=dt.UTC)
        (window,) = registry.shift_windows(a)
        assert (window.days, window.start, window.end) == (("mon", "tue"), dt.time(6), dt.time.max)


def test_search_finds_by_name_reference_and_badge_id(desk, site, instance) -> None:  # type: ignore[no-untyped-def]
    holder_id = register(desk, site, instance)
    badge = issue(desk, site, instance, holder_id)
    with desk() as s:
        for text in ("mart", "LÉA", badge.id, holder_id):
            rows, total = registry.search(s, text)
            assert [h.id for h in rows] == [holder_id] and total == 1, text
        assert registry.search(s, "100%")[1] == 0  # LIKE wildcards are searched as text


# --- badges ------------------------------------------------------------------------------------------


def test_issued_badge_holds_badge_codes_fits_the_qr_and_is_audited(desk, site, instance) -> None:  # type: ignore[no-untyped-def]
    holder_id = register(desk, site, instance)
    badge = issue(desk, site, instance, holder_id)
    claims = tokens.verify_token(
        badge.token, instance.keyring.badge_public, instance.settings.issuer, site.zone_for_badge_code
    )
    assert isinstance(claims, tokens.BadgeClaims)
    assert claims.zones == {"STADIUM-PERIMETER", "STADIUM-CONCOURSE"}
    assert (claims.badge_id, claims.holder_id, claims.kid) == (badge.id, holder_id, instance.keyring.badge_kid)
    assert tokens.fits_qr(badge.token) and len(badge.token) <= tokens.QR_MAX_BYTES
    assert badge.zones == "STADIUM-CONCOURSE STADIUM-PERIMETER"
    [entry] = entries(desk, "badge_issued")
    assert (entry.badge_id, entry.holder_id, entry.operator) == (badge.id, holder_id, "clerk1")
    assert decide(instance, site, badge.token) == "granted"


def test_a_zone_that_requires_a_qualification_refuses_the_badge(desk, site, instance) -> None:  # type: ignore[no-untyped-def]
    holder_id = register(desk, site, instance, zones=["STADIUM-PERIMETER", "STADIUM-FIELD"])
    with pytest.raises(DeskError, match="zone STADIUM-FIELD requires field_access_briefing"):
        issue(desk, site, instance, holder_id)
    assert entries(desk, "badge_issued") == []


def test_a_qualification_that_ends_before_the_badge_refuses_it(desk, site, instance) -> None:  # type: ignore[no-untyped-def]
    early = QualificationDraft("field_access_briefing", dt.date(2026, 8, 1), "FB-1")
    holder_id = register(desk, site, instance, zones=["STADIUM-FIELD"], quals=[early])
    with pytest.raises(DeskError, match="expires on 2026-08-01, before the badge ends"):
        issue(desk, site, instance, holder_id)


def test_a_new_badge_supersedes_the_holders_earlier_one(desk, site, instance) -> None:  # type: ignore[no-untyped-def]
    holder_id = register(desk, site, instance)
    first = issue(desk, site, instance, holder_id)
    second = issue(desk, site, instance, holder_id)
    with desk() as s:
        revocation = s.scalar(select(Revocation).where(Revocation.badge_id == first.id))
        assert revocation is not None and revocation.reason == f"superseded by badge {second.id}"
        assert badges.current_badge(s, holder_id, NOW).id == second.id  # type: ignore[union-attr]
    assert decide(instance, site, first.token) == "revoked"
    assert decide(instance, site, second.token) == "granted"


def test_revocation_is_one_row_and_one_audit_entry_and_denies_the_next_decision(desk, site, instance) -> None:  # type: ignore[no-untyped-def]
    badge = issue(desk, site, instance, register(desk, site, instance))
    assert decide(instance, site, badge.token) == "granted"
    with desk() as s, s.begin():
        badges.revoke_badge(s, badge.id, "reported stolen", NOW, CLERK)
    with desk() as s, s.begin():
        badges.revoke_badge(s, badge.id, "again", NOW, CLERK)  # twice: nothing new
    with desk() as s:
        assert s.scalar(select(func.count()).select_from(Revocation)) == 1
    [entry] = entries(desk, "badge_revoked")
    assert (entry.badge_id, entry.detail, entry.operator) == (badge.id, "reported stolen", "clerk1")
    assert decide(instance, site, badge.token) == "revoked"


def test_revocation_without_its_audit_entry_is_not_kept(desk, site, instance, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    badge = issue(desk, site, instance, register(desk, site, instance))

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(audit, "append", broken)
    with pytest.raises(RuntimeError), desk() as s, s.begin():
        badges.revoke_badge(s, badge.id, "lost", NOW, CLERK)
    with desk() as s:
        assert s.scalar(select(func.count()).select_from(Revocation)) == 0


def test_suspension_denies_at_once_and_reinstating_lets_in_again(desk, site, instance) -> None:  # type: ignore[no-untyped-def]
    holder_id = register(desk, site, instance)
    badge = issue(desk, site, instance, holder_id)
    with desk() as s, s.begin():
        registry.suspend(s, s.get(Holder, holder_id), "under investigation", NOW, CLERK)
    assert decide(instance, site, badge.token) == "holder_suspended"
    with desk() as s, s.begin():
        h = s.get(Holder, holder_id)
        with pytest.raises(DeskError, match="already suspended"):
            registry.suspend(s, h, "twice", NOW, CLERK)
        with pytest.raises(DeskError, match="is suspended; no badge can be issued"):
            badges.issue_from_assignment(s, site, instance.keyring, instance.settings.issuer, h, NOW, CLERK)
    with desk() as s, s.begin():
        registry.reinstate(s, s.get(Holder, holder_id), "cleared", NOW, CLERK)
    assert decide(instance, site, badge.token) == "granted"
    assert [e.detail for e in entries(desk, "holder_suspended")] == ["under investigation"]
    assert [e.detail for e in entries(desk, "holder_reinstated")] == ["cleared"]


def test_reissue_after_loss_revokes_the_old_badge_in_the_same_step(desk, site, instance) -> None:  # type: ignore[no-untyped-def]
    holder_id = register(desk, site, instance)
    lost = issue(desk, site, instance, holder_id)
    with desk() as s, s.begin():
        new = badges.reissue_badge(
            s, site, instance.keyring, instance.settings.issuer, lost.id, "lost on the metro", NOW, CLERK
        )
    assert new.id != lost.id and new.zones == lost.zones
    assert decide(instance, site, lost.token) == "revoked"
    assert decide(instance, site, new.token) == "granted"
    assert [e.badge_id for e in entries(desk, "badge_revoked")] == [lost.id]
    assert [e.detail for e in entries(desk, "badge_revoked")] == ["replaced: lost on the metro"]


def test_audit_chain_stays_whole_through_desk_work(desk, site, instance) -> None:  # type: ignore[no-untyped-def]
    holder_id = register(desk, site, instance)
    badge = issue(desk, site, instance, holder_id)
    with desk() as s, s.begin():
        badges.reissue_badge(s, site, instance.keyring, instance.settings.issuer, badge.id, "lost", NOW, CLERK)
    with desk() as s:
        assert verify_database(s, [], {}).ok


def test_batch_issue_gives_a_badge_to_whoever_needs_one(desk, site, instance) -> None:  # type: ignore[no-untyped-def]
    ready = register(desk, site, instance)
    with desk() as s, s.begin():
        org = registry.find_organisation(s, "GN-75")
        bare = registry.register(s, site, org, HolderDraft("Petit", "Jean", "FR", "gendarme"), NOW)
        bare_id = bare.id
        first = badges.issue_for_organisation(s, site, instance.keyring, instance.settings.issuer, org, NOW, CLERK)
    assert [b.holder_id for b in first.issued] == [ready]
    assert [(h.id, why) for h, why in first.skipped] == [(bare_id, "no assignment")]
    with desk() as s, s.begin():
        org = registry.find_organisation(s, "GN-75")
        again = badges.issue_for_organisation(s, site, instance.keyring, instance.settings.issuer, org, NOW, CLERK)
    assert again.issued == [] and len(again.skipped) == 2  # the first holder already holds that badge


# --- keys ----------------------------------------------------------------------------------------------


def test_rotation_keeps_old_badges_valid_until_their_key_is_retired(desk, site, instance) -> None:  # type: ignore[no-untyped-def]
    old_badge = issue(desk, site, instance, register(desk, site, instance))
    old_kid, new_kid = rotate_badge_key(instance.folder)
    assert old_kid == instance.keyring.badge_kid != new_kid and len(new_kid) == 4
    rotated = load_instance(instance.folder)
    assert rotated.keyring.badge_kid == new_kid
    assert set(rotated.keyring.badge_public) == {old_kid, new_kid}
    jwks_kids = {k["kid"] for k in rotated.keyring.jwks()["keys"] if k["acs_purpose"] == "badge"}
    assert jwks_kids == {old_kid, new_kid}
    assert not (instance.folder / "keys" / f"badge-{old_kid}.pem").exists()  # nothing signs with it again

    with desk() as s, s.begin():
        holder = registry.register(
            s, site, registry.find_organisation(s, "GN-75"), HolderDraft("Roux", "Ana", "FR", "police"), NOW
        )
        new_badge = badges.issue_badge(
            s,
            site,
            rotated.keyring,
            rotated.settings.issuer,
            holder,
            ["STADIUM-PERIMETER"],
            NOW - dt.timedelta(hours=1),
            NOW + dt.timedelta(days=1),
            NOW,
            CLERK,
        )
    assert new_badge.kid == new_kid
    assert decide(instance, site, old_badge.token) == "granted"
    assert decide(instance, site, new_badge.token) == "granted"

    with pytest.raises(InstanceError, match="signs new badges"):
        retire_badge_key(instance.folder, new_kid)
    retire_badge_key(instance.folder, old_kid)
    retired = load_instance(instance.folder)
    assert set(retired.keyring.badge_public) == {new_kid}
    assert {k["kid"] for k in retired.keyring.jwks()["keys"] if k["acs_purpose"] == "badge"} == {new_kid}
    assert decide(instance, site, old_badge.token) == "unknown_kid"
    assert decide(instance, site, new_badge.token) == "granted"
    assert (instance.folder / "keys" / "retired" / f"badge-{old_kid}.pub.pem").is_file()
