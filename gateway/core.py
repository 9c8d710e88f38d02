"""The pure decision core: verified claims, facts, site rules, threat level and `now` in; a Decision out.

No I/O, no clock, no Flask, SQLAlchemy or MQTT. A denial is a value; an exception here is a fault.
When several rules fail, the reason is the first in `_PRIORITY` order and the others are kept in `detail`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from gateway.site import OUTSIDE, Site

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
    # the zone
    ZONE_NOT_PERMITTED = "zone_not_permitted"
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
class HolderFacts:
    """What the gateway's records say about the badge and its holder at decision time."""

    badge_known: bool
    badge_revoked: bool
    holder_status: str | None  # "active", "suspended", or None when the holder is not on record


UNKNOWN_FACTS = HolderFacts(badge_known=False, badge_revoked=False, holder_status=None)


def decide(
    token: BadgeClaims | TokenProblem,
    facts: HolderFacts,
    site: Site,
    reader_code: str,
    threat_level: str,
    now: dt.datetime,
) -> Decision:
    """May the bearer of `token` pass reader `reader_code` at `now`?"""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    reader = site.readers.get(reader_code)
    if reader is None:
        return Decision(
            False, Reason.UNKNOWN_READER, f"reader {reader_code!r} is not in the site configuration"
        )
    if reader.gate not in site.gates:
        return Decision(False, Reason.UNKNOWN_GATE, f"gate {reader.gate!r} is not in the site configuration")
    if isinstance(token, TokenProblem):
        return Decision(False, token.reason, token.detail)

    failures: list[tuple[Reason, str]] = []
    failures.extend(_validity(token, now))
    failures.extend(_standing(facts))
    failures.extend(_zone(token, site, site.target_zone(reader)))
    if not failures:
        return Decision(True, Reason.GRANTED, f"into {site.target_zone(reader)}")
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
]


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


def _zone(token: BadgeClaims, site: Site, zone: str) -> list[tuple[Reason, str]]:
    if zone_permitted(token.zones, site, zone):
        return []
    return [(Reason.ZONE_NOT_PERMITTED, f"badge does not open {zone}")]


def _ago(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h"
