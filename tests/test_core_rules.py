"""The zone rules of decide(): time, qualifications, threat level, anti-passback, capacity. `now` is passed in."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import pytest

from gateway.core import BadgeClaims, HolderFacts, Reason, Whereabouts, decide, effective_threat_rule
from gateway.site import Site, TimeWindow

# Friday 26 July 2024, 20:00 in Paris.
NOW = dt.datetime(2024, 7, 26, 18, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
MIN = dt.timedelta(minutes=1)
EVERY_ZONE = frozenset(
    {
        "STADIUM-PERIMETER",
        "STADIUM-CONCOURSE",
        "STADIUM-BOWL",
        "STADIUM-FIELD",
        "STADIUM-VIP",
        "STADIUM-OPS",
        "AIRPORT-LANDSIDE",
    }
)


def facts(
    role: str = "police",
    quals: Mapping[str, dt.datetime | None] | None = None,
    shifts: tuple[TimeWindow, ...] = (),
    where: tuple[str, dt.datetime] | None = None,
) -> HolderFacts:
    return HolderFacts(
        badge_known=True,
        badge_revoked=False,
        holder_status="active",
        role=role,
        qualifications=dict(quals or {}),
        shifts=shifts,
        whereabouts=Whereabouts(*where) if where else None,
    )


def run(
    site: Site,
    reader: str,
    holder: HolderFacts,
    level: str = "vigilance",
    now: dt.datetime = NOW,
    occupancy: Mapping[str, int] | None = None,
) -> tuple[bool, Reason]:
    token = BadgeClaims(
        "B-0001", "H-0001", EVERY_ZONE, int(NOW.timestamp()) - 7 * 86400, int(NOW.timestamp()) + 7 * 86400, "kid"
    )
    decision = decide(token, holder, site, reader, level, now, occupancy)
    return decision.allow, decision.reason


GRANTED = (True, Reason.GRANTED)
ALL_QUALS = {
    q: None
    for q in (
        "ops_room_clearance",
        "field_access_briefing",
        "firearm_authorisation",
        "explosives_search",
        "airside_pass",
    )
}


@pytest.mark.parametrize(
    ("reader", "holder", "expected"),
    [
        pytest.param("STA-G6-IN", facts(), (False, Reason.QUALIFICATION_MISSING), id="ops-room-without-clearance"),
        pytest.param(
            "STA-G6-IN",
            facts(quals={"ops_room_clearance": NOW - DAY}),
            (False, Reason.QUALIFICATION_EXPIRED),
            id="ops-room-clearance-expired-yesterday",
        ),
        pytest.param(
            "STA-G6-IN",
            facts(quals={"ops_room_clearance": NOW}),
            (False, Reason.QUALIFICATION_EXPIRED),
            id="clearance-expiring-exactly-now",
        ),
        pytest.param("STA-G6-IN", facts(quals={"ops_room_clearance": NOW + MIN}), GRANTED, id="clearance-valid"),
        pytest.param("STA-G6-IN", facts(quals={"ops_room_clearance": None}), GRANTED, id="clearance-no-expiry"),
        pytest.param(
            "STA-G4-IN",
            facts(quals={"ops_room_clearance": None}),
            (False, Reason.QUALIFICATION_MISSING),
            id="field-needs-its-own-briefing",
        ),
    ],
)
def test_qualifications(site: Site, reader: str, holder: HolderFacts, expected: tuple[bool, Reason]) -> None:
    assert run(site, reader, holder) == expected


PARIS = dt.timezone(dt.timedelta(hours=2))  # CEST, the site's offset in July


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        pytest.param(dt.datetime(2024, 7, 26, 20, 0, tzinfo=PARIS), GRANTED, id="friday-evening"),
        pytest.param(dt.datetime(2024, 7, 25, 20, 0, tzinfo=PARIS), (False, Reason.OUTSIDE_SCHEDULE), id="thursday"),
        pytest.param(
            dt.datetime(2024, 7, 26, 23, 30, tzinfo=PARIS),
            (False, Reason.OUTSIDE_SCHEDULE),
            id="closing-time-is-exclusive",
        ),
        pytest.param(dt.datetime(2024, 7, 26, 10, 0, tzinfo=PARIS), GRANTED, id="opening-time-is-inclusive"),
        pytest.param(
            dt.datetime(2024, 7, 26, 9, 59, tzinfo=PARIS), (False, Reason.OUTSIDE_SCHEDULE), id="a-minute-early"
        ),
    ],
)
def test_zone_schedule_in_site_time(site: Site, local: dt.datetime, expected: tuple[bool, Reason]) -> None:
    # STADIUM-VIP opens fri-sun 10:00-23:30, Paris time; the badge is valid all week.
    assert run(site, "STA-G5-IN", facts(), now=local.astimezone(dt.UTC)) == expected


@pytest.mark.parametrize(
    ("shift", "expected"),
    [
        pytest.param(TimeWindow(("fri",), dt.time(8), dt.time(16)), (False, Reason.OUTSIDE_SHIFT), id="day-shift"),
        pytest.param(TimeWindow(("fri",), dt.time(18), dt.time(23)), GRANTED, id="evening-shift"),
        pytest.param(TimeWindow(("sat",), dt.time(18), dt.time(23)), (False, Reason.OUTSIDE_SHIFT), id="wrong-day"),
    ],
)
def test_holder_shift(site: Site, shift: TimeWindow, expected: tuple[bool, Reason]) -> None:
    assert run(site, "STA-G1-IN", facts(shifts=(shift,))) == expected


@pytest.mark.parametrize(
    ("reader", "level", "holder", "expected"),
    [
        pytest.param("STA-G5-IN", "vigilance", facts(role="soldier"), GRANTED, id="vip-calm-any-role"),
        pytest.param(
            "STA-G5-IN",
            "heightened",
            facts(role="soldier", quals=ALL_QUALS),
            (False, Reason.ROLE_NOT_PERMITTED),
            id="vip-heightened-soldier",
        ),
        pytest.param(
            "STA-G5-IN",
            "heightened",
            facts(role="police"),
            (False, Reason.QUALIFICATION_MISSING),
            id="vip-heightened-police-unarmed",
        ),
        pytest.param(
            "STA-G5-IN",
            "heightened",
            facts(role="police", quals={"firearm_authorisation": None}),
            GRANTED,
            id="vip-heightened-police-armed",
        ),
        pytest.param(
            "STA-G4-IN",
            "emergency",
            facts(quals=ALL_QUALS),
            (False, Reason.ZONE_CLOSED),
            id="field-closed-in-emergency",
        ),
        pytest.param("STA-G3-IN", "vigilance", facts(role="private_guard"), GRANTED, id="bowl-calm"),
        pytest.param(
            "STA-G3-IN",
            "heightened",
            facts(role="private_guard"),
            (False, Reason.QUALIFICATION_MISSING),
            id="bowl-heightened-needs-search-qualification",
        ),
        pytest.param(
            "STA-G3-IN",
            "emergency",
            facts(role="police"),
            (False, Reason.QUALIFICATION_MISSING),
            id="emergency-keeps-the-heightened-requirement",
        ),
        pytest.param(
            "STA-G3-IN",
            "emergency",
            facts(role="police", quals={"explosives_search": None}),
            GRANTED,
            id="bowl-emergency-police-qualified",
        ),
        pytest.param(
            "STA-G3-IN",
            "emergency",
            facts(role="private_guard", quals={"explosives_search": None}),
            (False, Reason.ROLE_NOT_PERMITTED),
            id="bowl-emergency-private-guard",
        ),
        pytest.param(
            "STA-G3-OUT", "emergency", facts(role="private_guard"), GRANTED, id="leaving-the-bowl-is-never-held-up"
        ),
    ],
)
def test_threat_level(site: Site, reader: str, level: str, holder: HolderFacts, expected: tuple[bool, Reason]) -> None:
    assert run(site, reader, holder, level=level) == expected


def test_threat_rules_accumulate_as_the_level_rises(site: Site) -> None:
    bowl = site.zones["STADIUM-BOWL"]
    assert effective_threat_rule(site, bowl, "vigilance").requires == ()
    assert effective_threat_rule(site, bowl, "heightened").requires == ("explosives_search",)
    emergency = effective_threat_rule(site, bowl, "emergency")
    assert emergency.requires == ("explosives_search",) and "private_guard" not in emergency.roles


def test_unknown_threat_level_is_a_fault(site: Site) -> None:
    with pytest.raises(ValueError, match="threat level"):
        run(site, "STA-G1-IN", facts(), level="apocalypse")


@pytest.mark.parametrize(
    ("reader", "where", "expected"),
    [
        pytest.param("STA-G2-IN", None, GRANTED, id="hard-never-seen"),
        pytest.param("STA-G2-IN", ("STADIUM-PERIMETER", NOW - MIN), GRANTED, id="hard-coming-from-outside-the-zone"),
        pytest.param(
            "STA-G2-IN", ("STADIUM-CONCOURSE", NOW - DAY), (False, Reason.ANTI_PASSBACK), id="hard-already-inside"
        ),
        pytest.param(
            "STA-G2-IN", ("STADIUM-BOWL", NOW - DAY), (False, Reason.ANTI_PASSBACK), id="hard-inside-a-child-zone"
        ),
        pytest.param(
            "STA-G1-IN", ("STADIUM-PERIMETER", NOW - MIN), (True, Reason.ANTI_PASSBACK_SOFT), id="soft-allows-and-flags"
        ),
        pytest.param("STA-G1-IN", ("outside", NOW - MIN), GRANTED, id="soft-after-leaving"),
        pytest.param(
            "STA-G3-IN", ("STADIUM-BOWL", NOW - 5 * MIN), (False, Reason.ANTI_PASSBACK), id="timed-within-ten-minutes"
        ),
        pytest.param("STA-G3-IN", ("STADIUM-BOWL", NOW - 10 * MIN), GRANTED, id="timed-after-ten-minutes"),
        pytest.param("STA-G3-OUT", ("STADIUM-BOWL", NOW - MIN), GRANTED, id="leaving-is-not-passback"),
        pytest.param("CDG-G1-IN", ("AIRPORT-LANDSIDE", NOW - MIN), GRANTED, id="zone-without-anti-passback"),
    ],
)
def test_anti_passback(
    site: Site, reader: str, where: tuple[str, dt.datetime] | None, expected: tuple[bool, Reason]
) -> None:
    holder = facts(quals=ALL_QUALS, where=where)
    assert run(site, reader, holder) == expected


@pytest.mark.parametrize(
    ("reader", "occupancy", "where", "expected"),
    [
        pytest.param("STA-G6-IN", {"STADIUM-OPS": 59}, None, GRANTED, id="one-place-left"),
        pytest.param("STA-G6-IN", {"STADIUM-OPS": 60}, None, (False, Reason.ZONE_FULL), id="full"),
        pytest.param(
            "STA-G2-IN",
            {"STADIUM-CONCOURSE": 60000, "STADIUM-BOWL": 10000},
            None,
            (False, Reason.ZONE_FULL),
            id="children-count-towards-the-parent",
        ),
        pytest.param(
            "STA-G2-IN",
            {"STADIUM-CONCOURSE": 60000, "STADIUM-PERIMETER": 10000},
            None,
            GRANTED,
            id="the-parent-does-not-count-towards-the-child",
        ),
        pytest.param(
            "STA-G2-OUT",
            {"STADIUM-PERIMETER": 90000},
            ("STADIUM-CONCOURSE", NOW - DAY),
            GRANTED,
            id="exits-are-always-allowed",
        ),
    ],
)
def test_capacity(
    site: Site,
    reader: str,
    occupancy: dict[str, int],
    where: tuple[str, dt.datetime] | None,
    expected: tuple[bool, Reason],
) -> None:
    assert run(site, reader, facts(quals=ALL_QUALS, where=where), occupancy=occupancy) == expected


def test_the_closest_failure_wins_and_the_others_stay_in_the_detail(site: Site) -> None:
    holder = facts(role="soldier", where=("STADIUM-VIP", NOW - MIN))
    token = BadgeClaims("B-1", "H-1", EVERY_ZONE, 0, 2**31, "kid")
    decision = decide(token, holder, site, "STA-G5-IN", "heightened", NOW, {"STADIUM-VIP": 1500})
    assert (decision.allow, decision.reason) == (False, Reason.ROLE_NOT_PERMITTED)
    for other in ("qualification_missing", "anti_passback"):
        assert other in decision.detail
