"""decide(): one behaviour per row, reason codes asserted, `now` always passed in."""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core import (
    UNKNOWN_FACTS,
    BadgeClaims,
    Decision,
    HolderFacts,
    Reason,
    TokenProblem,
    decide,
)
from gateway.site import Site

NOW = dt.datetime(2024, 7, 26, 18, 0, tzinfo=dt.UTC)
T = int(NOW.timestamp())
HOUR = 3600

ACTIVE = HolderFacts(badge_known=True, badge_revoked=False, holder_status="active")
REVOKED = HolderFacts(badge_known=True, badge_revoked=True, holder_status="active")
NOT_ON_RECORD = HolderFacts(badge_known=False, badge_revoked=False, holder_status="active")
SUSPENDED = HolderFacts(badge_known=True, badge_revoked=False, holder_status="suspended")
NO_HOLDER = HolderFacts(badge_known=True, badge_revoked=False, holder_status=None)

STADIUM = frozenset({"STADIUM-PERIMETER", "STADIUM-CONCOURSE", "STADIUM-BOWL"})


def badge(
    zones: frozenset[str] | set[str] = STADIUM, not_before: int = T - HOUR, expires: int = T + HOUR
) -> BadgeClaims:
    return BadgeClaims(
        badge_id="B-0001",
        holder_id="H-0001",
        zones=frozenset(zones),
        not_before=not_before,
        expires=expires,
        kid="test-kid",
    )


def at(epoch_seconds: float, tz: dt.tzinfo = dt.UTC) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_seconds, tz)


def run(
    token: BadgeClaims | TokenProblem,
    site: Site,
    reader: str = "STA-G3-IN",
    facts: HolderFacts = ACTIVE,
    now: dt.datetime = NOW,
) -> Decision:
    return decide(token, facts, site, reader, "vigilance", now)


# --- granted -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reader", "zones"),
    [
        pytest.param("STA-G1-IN", {"STADIUM-PERIMETER"}, id="perimeter-in"),
        pytest.param("STA-G3-IN", {"STADIUM-BOWL"}, id="bowl-in"),
        pytest.param("STA-G3-OUT", {"STADIUM-CONCOURSE"}, id="back-out-to-concourse"),
        pytest.param("STA-G1-OUT", set(), id="out-to-outside-needs-no-zone"),
        pytest.param("CDG-G1-OUT", {"STADIUM-FIELD"}, id="out-to-outside-with-unrelated-badge"),
        pytest.param("GDN-G2-IN", {"STATION-CHECKPOINT"}, id="inherit-platforms-via-checkpoint"),
        pytest.param("GDN-G2-IN", {"STATION-PLATFORMS"}, id="inherit-zone-named-itself"),
        pytest.param("CDG-G2-OUT", {"AIRPORT-AIRSIDE"}, id="leaving-a-zone-into-one-not-on-the-badge"),
    ],
)
def test_granted(site: Site, reader: str, zones: set[str]) -> None:
    decision = run(badge(zones), site, reader=reader)
    assert (decision.allow, decision.reason) == (True, Reason.GRANTED)


# --- the place -----------------------------------------------------------------------------------------


def test_unknown_reader(site: Site) -> None:
    decision = run(badge(), site, reader="NO-SUCH-READER")
    assert (decision.allow, decision.reason) == (False, Reason.UNKNOWN_READER)


def test_unknown_reader_comes_before_the_token_problem(site: Site) -> None:
    problem = TokenProblem(Reason.BAD_SIGNATURE, "signature does not verify")
    assert run(problem, site, reader="NO-SUCH-READER").reason == Reason.UNKNOWN_READER


def test_unknown_gate(site: Site) -> None:
    gateless = dataclasses.replace(site, gates={k: v for k, v in site.gates.items() if k != "STA-G3"})
    decision = run(badge(), gateless, reader="STA-G3-IN")
    assert (decision.allow, decision.reason) == (False, Reason.UNKNOWN_GATE)


# --- the token -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reason",
    [
        Reason.TOKEN_MALFORMED,
        Reason.BAD_SIGNATURE,
        Reason.UNKNOWN_KID,
        Reason.WRONG_TYP,
        Reason.WRONG_ISSUER,
    ],
)
def test_token_problem_is_passed_through(site: Site, reason: Reason) -> None:
    decision = run(TokenProblem(reason, "why"), site, facts=UNKNOWN_FACTS)
    assert (decision.allow, decision.reason, decision.detail) == (False, reason, "why")


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        pytest.param(at(T - 1), Reason.GRANTED, id="before-exp"),
        pytest.param(at(T), Reason.GRANTED, id="at-exp"),
        pytest.param(at(T + 29), Reason.GRANTED, id="exp+29s"),
        pytest.param(at(T + 30) - dt.timedelta(microseconds=1), Reason.GRANTED, id="exp+30s-1us"),
        pytest.param(at(T + 30), Reason.EXPIRED, id="exp+30s"),
        pytest.param(at(T + 31), Reason.EXPIRED, id="exp+31s"),
        pytest.param(at(T + 10 * HOUR), Reason.EXPIRED, id="long-expired"),
        pytest.param(at(T + 30, zoneinfo.ZoneInfo("Europe/Paris")), Reason.EXPIRED, id="exp+30s-paris-time"),
    ],
)
def test_expiry_with_leeway(site: Site, now: dt.datetime, reason: Reason) -> None:
    assert run(badge(not_before=T - HOUR, expires=T), site, now=now).reason == reason


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        pytest.param(at(T), Reason.GRANTED, id="at-nbf"),
        pytest.param(at(T - 1), Reason.GRANTED, id="nbf-1s"),
        pytest.param(at(T - 30), Reason.GRANTED, id="nbf-30s"),
        pytest.param(at(T - 30) - dt.timedelta(microseconds=1), Reason.NOT_YET_VALID, id="nbf-30s-1us"),
        pytest.param(at(T - 31), Reason.NOT_YET_VALID, id="nbf-31s"),
        pytest.param(at(T - 10 * HOUR), Reason.NOT_YET_VALID, id="long-before"),
        pytest.param(at(T - 31, zoneinfo.ZoneInfo("Europe/Paris")), Reason.NOT_YET_VALID, id="paris"),
    ],
)
def test_not_before_with_leeway(site: Site, now: dt.datetime, reason: Reason) -> None:
    assert run(badge(not_before=T, expires=T + HOUR), site, now=now).reason == reason


@given(offset=st.integers(min_value=-3 * HOUR, max_value=3 * HOUR))
def test_validity_window_property(site: Site, offset: int) -> None:
    """Allowed exactly when nbf - 30 s <= now < exp + 30 s (badge valid T .. T+1h)."""
    decision = run(badge(not_before=T, expires=T + HOUR), site, now=at(T + offset))
    assert decision.allow == (-30 <= offset < HOUR + 30)


# --- the holder ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        pytest.param(REVOKED, Reason.REVOKED, id="revoked"),
        pytest.param(NOT_ON_RECORD, Reason.REVOKED, id="badge-not-on-record"),
        pytest.param(UNKNOWN_FACTS, Reason.REVOKED, id="nothing-on-record"),
        pytest.param(SUSPENDED, Reason.HOLDER_SUSPENDED, id="suspended"),
        pytest.param(
            HolderFacts(badge_known=True, badge_revoked=False, holder_status="left"),
            Reason.HOLDER_SUSPENDED,
            id="any-status-but-active",
        ),
        pytest.param(NO_HOLDER, Reason.UNKNOWN_HOLDER, id="unknown-holder"),
    ],
)
def test_holder_standing(site: Site, facts: HolderFacts, reason: Reason) -> None:
    decision = run(badge(), site, facts=facts)
    assert (decision.allow, decision.reason) == (False, reason)


# --- the zone ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reader", "zones"),
    [
        pytest.param("STA-G3-IN", {"STADIUM-CONCOURSE"}, id="explicit-child-not-covered-by-parent"),
        pytest.param(
            "STA-G4-IN", {"STADIUM-PERIMETER", "STADIUM-BOWL"}, id="explicit-not-covered-by-ancestors"
        ),
        pytest.param("STA-G1-IN", set(), id="no-zones"),
        pytest.param("GDN-G1-IN", {"STATION-PLATFORMS"}, id="inherit-child-does-not-open-parent"),
        pytest.param("GDN-G2-IN", {"STADIUM-PERIMETER"}, id="inherit-zone-other-tree"),
        pytest.param("CDG-G2-OUT", {"STADIUM-BOWL"}, id="out-of-a-zone-the-badge-does-not-open-either"),
    ],
)
def test_zone_not_permitted(site: Site, reader: str, zones: set[str]) -> None:
    decision = run(badge(zones), site, reader=reader)
    assert (decision.allow, decision.reason) == (False, Reason.ZONE_NOT_PERMITTED)


# --- several failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "token", "now", "first", "others"),
    [
        pytest.param(
            REVOKED,
            badge({"STADIUM-PERIMETER"}),
            NOW,
            Reason.REVOKED,
            [Reason.ZONE_NOT_PERMITTED],
            id="revoked>zone",
        ),
        pytest.param(
            HolderFacts(badge_known=True, badge_revoked=True, holder_status="suspended"),
            badge(expires=T - HOUR),
            NOW,
            Reason.REVOKED,
            [Reason.HOLDER_SUSPENDED, Reason.EXPIRED],
            id="revoked>suspended>expired",
        ),
        pytest.param(
            SUSPENDED,
            badge({"STADIUM-PERIMETER"}, expires=T - HOUR),
            NOW,
            Reason.HOLDER_SUSPENDED,
            [Reason.EXPIRED, Reason.ZONE_NOT_PERMITTED],
            id="suspended>expired>zone",
        ),
        pytest.param(
            NO_HOLDER,
            badge(not_before=T + HOUR, expires=T + 2 * HOUR),
            NOW,
            Reason.UNKNOWN_HOLDER,
            [Reason.NOT_YET_VALID],
            id="unknown-holder>not-yet-valid",
        ),
        pytest.param(
            ACTIVE,
            badge({"STADIUM-PERIMETER"}, expires=T - HOUR),
            NOW,
            Reason.EXPIRED,
            [Reason.ZONE_NOT_PERMITTED],
            id="expired>zone",
        ),
        pytest.param(
            ACTIVE,
            badge({"STADIUM-PERIMETER"}, not_before=T + HOUR, expires=T + 2 * HOUR),
            NOW,
            Reason.NOT_YET_VALID,
            [Reason.ZONE_NOT_PERMITTED],
            id="not-yet-valid>zone",
        ),
    ],
)
def test_priority_when_several_rules_fail(
    site: Site, facts: HolderFacts, token: BadgeClaims, now: dt.datetime, first: Reason, others: list[Reason]
) -> None:
    decision = run(token, site, facts=facts, now=now)
    assert (decision.allow, decision.reason) == (False, first)
    for other in others:
        assert f"{other.value}: " in decision.detail


def test_single_failure_mentions_no_other_reason(site: Site) -> None:
    decision = run(badge({"STADIUM-PERIMETER"}), site)
    mentioned = {r for r in Reason if f"{r.value}: " in decision.detail}
    assert (decision.reason, mentioned) == (Reason.ZONE_NOT_PERMITTED, set())


# --- faults --------------------------------------------------------------------------------------------


def test_naive_now_raises(site: Site) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        run(badge(), site, now=NOW.replace(tzinfo=None))
