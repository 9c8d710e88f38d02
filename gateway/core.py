"""The pure decision core: verified claims, facts, site rules, threat level and `now` in; a Decision out.

No I/O, no clock, no Flask, SQLAlchemy or MQTT. A denial is a value; an exception here is a fault.
When several rules fail, the reason is the first in `_PRIORITY` order and the others are kept in `detail`.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.site import OUTSIDE, Reader, Site, ThreatRule, TimeWindow, Zone

LEEWAY_S = 30  # clock tolerance on nbf/exp between issuing and deciding machines


class Reason(StrEnum):
    """Stable reason codes; docs/protocol.md gives each one's meaning. Never reuse a code for another meaning."""

    GRANTED = "granted"
    # the place
    UNKNOWN_READER = "unknown_reader"
    UNKNOWN_GATE = "unknown_gate"
    # the token
    TOKEN_MALFORMED = "token_malformed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KID = "unknown_kid"
    WRONG_TYP = "wrong_typ"
    WRONG_ISSUER = "wrong_issuer"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    HOLDER_SUSPENDED = "holder_suspended"
    UNKNOWN_HOLDER = "unknown_holder"
    # the zone and its rules
    ZONE_NOT_PERMITTED = "zone_not_permitted"
    ZONE_CLOSED = "zone_closed"
    ROLE_NOT_PERMITTED = "role_not_permitted"
    QUALIFICATION_MISSING = "qualification_missing"
    QUALIFICATION_EXPIRED = "qualification_expired"
    OUTSIDE_SCHEDULE = "outside_schedule"
    OUTSIDE_SHIFT = "outside_shift"
    ANTI_PASSBACK = "anti_passback"
    ZONE_FULL = "zone_full"
    # allowed, with a flag for the leads
    ANTI_PASSBACK_SOFT = "anti_passback_soft"
    # decided outside the core
    GATEWAY_UNREACHABLE = "gateway_unreachable"
    NOT_LOGGED = "not_logged"
    NONCE_REUSED = "nonce_reused"


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: Reason
    detail: str = ""


@dataclass(frozen=True)
class BadgeClaims:
    """What a verified badge token proves."""

    badge_id: str
    holder_id: str
    zones: frozenset[str]
    not_before: int  # epoch seconds
    expires: int
    kid: str


@dataclass(frozen=True)
class TokenProblem:
    """Why a token proves nothing."""

    reason: Reason
    detail: str


@dataclass(frozen=True)
class Whereabouts:
    """Where the holder was last seen going, from a confirmed passage (not a grant)."""

    zone: str  # a zone code, or OUTSIDE
    since: dt.datetime


@dataclass(frozen=True)
class HolderFacts:
    """What the gateway's records say about the badge and its holder at decision time."""

    badge_known: bool
    badge_revoked: bool
    holder_status: str | None  # "active", "suspended", or None when the holder is not on record
    role: str = ""
    qualifications: Mapping[str, dt.datetime | None] = field(default_factory=dict)  # kind -> expiry (None: none)
    shifts: tuple[TimeWindow, ...] = ()  # site-local windows the holder works in; empty: no shift limit
    whereabouts: Whereabouts | None = None


UNKNOWN_FACTS = HolderFacts(badge_known=False, badge_revoked=False, holder_status=None)


def decide(
    token: BadgeClaims | TokenProblem,
    facts: HolderFacts,
    site: Site,
    reader_code: str,
    threat_level: str,
    now: dt.datetime,
    occupancy: Mapping[str, int] | None = None,
) -> Decision:
    """May the bearer of `token` pass reader `reader_code` at `now`?

    `occupancy` counts holders per zone (each zone on its own, not its children), from confirmed passages.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    reader = site.readers.get(reader_code)
    if reader is None:
        return Decision(False, Reason.UNKNOWN_READER, f"reader {reader_code!r} is not in the site configuration")
    if reader.gate not in site.gates:
        return Decision(False, Reason.UNKNOWN_GATE, f"gate {reader.gate!r} is not in the site configuration")
    if isinstance(token, TokenProblem):
        return Decision(False, token.reason, token.detail)
    if threat_level not in site.threat_levels:
        raise ValueError(f"unknown threat level {threat_level!r}")

    target = site.target_zone(reader)
    failures: list[tuple[Reason, str]] = []
    failures.extend(_validity(token, now))
    failures.extend(_standing(facts))
    failures.extend(_zone(token, site, reader))
    flags: list[str] = []
    if target != OUTSIDE and reader.side == "in":
        # Leaving towards a parent zone is never held up by the rules of the zone one walks into.
        zone = site.zones[target]
        local = now.astimezone(zoneinfo.ZoneInfo(site.timezone))
        failures.extend(_threat_rules(site, zone, threat_level, facts, now))
        failures.extend(_times(zone, facts, local))
        apb = _anti_passback(site, zone, facts, now)
        if apb and zone.anti_passback == "soft":
            flags.append(apb)
        elif apb:
            failures.append((Reason.ANTI_PASSBACK, apb))
        failures.extend(_capacity(site, zone, facts, occupancy or {}))
    if not failures:
        if flags:
            return Decision(True, Reason.ANTI_PASSBACK_SOFT, f"into {target}; flagged: {flags[0]}")
        return Decision(True, Reason.GRANTED, f"into {target}")
    failures.sort(key=lambda f: _PRIORITY.index(f[0]))
    reason, detail = failures[0]
    others = "; ".join(f"{r.value}: {d}" for r, d in failures[1:])
    return Decision(False, reason, f"{detail}; also {others}" if others else detail)


_PRIORITY = [
    Reason.REVOKED,
    Reason.HOLDER_SUSPENDED,
    Reason.UNKNOWN_HOLDER,
    Reason.EXPIRED,
    Reason.NOT_YET_VALID,
    Reason.ZONE_NOT_PERMITTED,
    Reason.ZONE_CLOSED,
    Reason.ROLE_NOT_PERMITTED,
    Reason.QUALIFICATION_MISSING,
    Reason.QUALIFICATION_EXPIRED,
    Reason.OUTSIDE_SCHEDULE,
    Reason.OUTSIDE_SHIFT,
    Reason.ANTI_PASSBACK,
    Reason.ZONE_FULL,
]


def effective_threat_rule(site: Site, zone: Zone, level: str) -> ThreatRule:
    """Rules tighten as the level rises: every rule of this level and of the calmer ones applies."""
    closed = False
    roles: set[str] | None = None
    requires: list[str] = []
    for current in site.threat_levels[: site.threat_levels.index(level) + 1]:
        rule = zone.threat_levels.get(current)
        if rule is None:
            continue
        closed = closed or rule.closed
        if rule.roles:
            roles = set(rule.roles) if roles is None else roles & set(rule.roles)
        requires.extend(q for q in rule.requires if q not in requires)
    return ThreatRule(closed=closed, roles=tuple(sorted(roles)) if roles is not None else (), requires=tuple(requires))


def _threat_rules(site: Site, zone: Zone, level: str, facts: HolderFacts, now: dt.datetime) -> list[tuple[Reason, str]]:
    rule = effective_threat_rule(site, zone, level)
    found: list[tuple[Reason, str]] = []
    if rule.closed:
        found.append((Reason.ZONE_CLOSED, f"{zone.code} is closed at threat level {level}"))
    # An empty intersection of role lists means no role may enter: that is still a restriction.
    restricted = any(
        zone.threat_levels.get(lv, ThreatRule()).roles
        for lv in site.threat_levels[: site.threat_levels.index(level) + 1]
    )
    if restricted and facts.role not in rule.roles:
        found.append(
            (Reason.ROLE_NOT_PERMITTED, f"role {facts.role or 'unknown'} may not enter {zone.code} at {level}")
        )
    required = list(zone.requires) + [q for q in rule.requires if q not in zone.requires]
    for kind in required:
        if kind not in facts.qualifications:
            found.append((Reason.QUALIFICATION_MISSING, f"{zone.code} requires {kind}"))
            continue
        expiry = facts.qualifications[kind]
        if expiry is not None and now >= expiry:
            found.append((Reason.QUALIFICATION_EXPIRED, f"{kind} expired {expiry:%Y-%m-%d}"))
    return found


def _times(zone: Zone, facts: HolderFacts, local: dt.datetime) -> list[tuple[Reason, str]]:
    found: list[tuple[Reason, str]] = []
    if zone.schedule and not any(w.contains(local) for w in zone.schedule):
        found.append((Reason.OUTSIDE_SCHEDULE, f"{zone.code} is not open at {local:%a %H:%M}"))
    if facts.shifts and not any(w.contains(local) for w in facts.shifts):
        found.append((Reason.OUTSIDE_SHIFT, f"not on shift at {local:%a %H:%M}"))
    return found


def _inside(site: Site, here: str, zone: str) -> bool:
    """Is a holder in `here` inside `zone` (the zone itself or one of its descendants)?"""
    return here != OUTSIDE and here in site.zones and (here == zone or zone in site.ancestors(here))


def _anti_passback(site: Site, zone: Zone, facts: HolderFacts, now: dt.datetime) -> str:
    """Why entering `zone` again breaks its anti-passback rule, or "" when it does not."""
    seen = facts.whereabouts
    if zone.anti_passback == "none" or seen is None or not _inside(site, seen.zone, zone.code):
        return ""
    if zone.anti_passback == "timed":
        minutes = (now - seen.since).total_seconds() / 60
        if minutes >= zone.anti_passback_minutes:
            return ""
        return f"entered {zone.code} {int(minutes)} min ago (re-entry after {zone.anti_passback_minutes} min)"
    return f"already inside {zone.code} since {seen.since:%H:%M} UTC"


def occupancy_of(site: Site, zone: str, occupancy: Mapping[str, int]) -> int:
    """Holders in a zone and all zones within it."""
    return sum(n for z, n in occupancy.items() if _inside(site, z, zone))


def _capacity(site: Site, zone: Zone, facts: HolderFacts, occupancy: Mapping[str, int]) -> list[tuple[Reason, str]]:
    if zone.capacity is None:
        return []
    seen = facts.whereabouts
    if seen is not None and _inside(site, seen.zone, zone.code):
        return []  # moving within the zone does not change how many are in it
    count = occupancy_of(site, zone.code, occupancy)
    if count >= zone.capacity:
        return [(Reason.ZONE_FULL, f"{zone.code} holds {count} of {zone.capacity}")]
    return []


def _validity(token: BadgeClaims, now: dt.datetime) -> list[tuple[Reason, str]]:
    t = now.timestamp()
    if t >= token.expires + LEEWAY_S:
        return [(Reason.EXPIRED, f"expired {_ago(t - token.expires)} ago")]
    if t < token.not_before - LEEWAY_S:
        return [(Reason.NOT_YET_VALID, f"valid in {_ago(token.not_before - t)}")]
    return []


def _standing(facts: HolderFacts) -> list[tuple[Reason, str]]:
    found: list[tuple[Reason, str]] = []
    if facts.badge_revoked:
        found.append((Reason.REVOKED, "badge revoked"))
    elif not facts.badge_known:
        # A genuine signature but no issuance on record: a database restored from an old backup, or a key leak.
        found.append((Reason.REVOKED, "badge not on record"))
    if facts.holder_status is None:
        found.append((Reason.UNKNOWN_HOLDER, "holder not on record"))
    elif facts.holder_status != "active":
        found.append((Reason.HOLDER_SUSPENDED, f"holder is {facts.holder_status}"))
    return found


def zone_permitted(badge_zones: frozenset[str], site: Site, zone: str) -> bool:
    """A badge opens a zone it names, or an 'inherit' zone whose parent chain it opens."""
    if zone == OUTSIDE:
        return True  # leaving the site needs no zone
    code: str | None = zone
    while code is not None:
        if code in badge_zones:
            return True
        current = site.zones[code]
        if current.access != "inherit":
            return False
        code = current.parent
    return False


def _zone(token: BadgeClaims, site: Site, reader: Reader) -> list[tuple[Reason, str]]:
    target = site.target_zone(reader)
    if zone_permitted(token.zones, site, target):
        return []
    if reader.side == "out" and zone_permitted(token.zones, site, site.gates[reader.gate].to_zone):
        return []  # whoever may be in a zone may leave it, even into a zone their badge does not open
    return [(Reason.ZONE_NOT_PERMITTED, f"badge does not open {target}")]


def _ago(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h"
