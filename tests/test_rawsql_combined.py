"""A decision batch's reads as one statement (`Raw.rows_combined`) read what the separate statements read.

On PostgreSQL the reads travel as JSON, so times come back as text and every other value through JSON: these
tests hold the combined reads to the plain ones, value for value, on both databases.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine

from gateway import tokens
from gateway.core import BadgeClaims
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import Assignment, Holder, Occupancy, Position, Qualification, Shift
from gateway.db.rawsql import Raw, transaction
from gateway.decisions import OCCUPANCY_QUERY, THREAT_LEVEL_QUERY, earlier_query, facts_from, facts_queries
from gateway.instance import Instance
from gateway.site import Site
from tests.factories import badged_holder

NOW = dt.datetime(2026, 7, 24, 18, 0, 0, 123000, tzinfo=dt.UTC)


@pytest.fixture
def engine(instance: Instance) -> Any:
    engine = make_engine(instance.settings.database_url)
    yield engine
    engine.dispose()


def claims_of(instance: Instance, site: Site, token: str) -> BadgeClaims:
    claims = tokens.verify_token(
        token, instance.keyring.badge_public, instance.settings.issuer, site.zone_for_badge_code
    )
    assert isinstance(claims, BadgeClaims)
    return claims


def test_facts_read_in_one_statement_are_the_facts_read_one_by_one(
    instance: Instance, site: Site, engine: Engine
) -> None:
    zones = ["STADIUM-PERIMETER", "STADIUM-CONCOURSE"]
    placed = badged_holder(instance, site, zones, NOW, name=("Ngata", "Aroha"))
    revoked = badged_holder(instance, site, zones, NOW, name=("Kowalski", "Jan"), revoked=True)
    bare = badged_holder(instance, site, zones, NOW, name=("Diallo", "Awa"))
    with session_factory(engine)() as s, s.begin():
        s.add(Position(holder_id=placed.holder_id, zone="STADIUM-CONCOURSE", gate="STA-G2", since=NOW))
        s.add(Qualification(holder_id=placed.holder_id, kind="ops_room_clearance", expires_at=NOW))
        s.add(Qualification(holder_id=placed.holder_id, kind="firearms", expires_at=None))
        s.add(Qualification(holder_id=revoked.holder_id, kind='k9 "handler" d\'élite', expires_at=NOW))
        suspended = s.get(Holder, bare.holder_id)
        assert suspended is not None
        suspended.status = "suspended"
        s.add(
            Assignment(
                holder_id=placed.holder_id,
                zones=" ".join(zones),
                valid_from=NOW,
                valid_until=NOW + dt.timedelta(days=5),
                changed_at=NOW,
                shifts=[
                    Shift(days="fri sat", starts="06:00", ends="14:00"),
                    Shift(days="sun", starts="18:00", ends="24:00"),
                ],
            )
        )
    claims = [claims_of(instance, site, b.token) for b in (placed, revoked, bare)]
    with transaction(engine) as raw:
        one_by_one = facts_from(raw, [raw.rows(*q) for q in facts_queries(raw, claims)], claims)
        combined = facts_from(raw, raw.rows_combined(facts_queries(raw, claims)), claims)
    assert combined == one_by_one
    facts = combined[placed.id]
    assert facts.qualifications == {"ops_room_clearance": NOW, "firearms": None}
    assert facts.whereabouts is not None and facts.whereabouts.since == NOW
    assert len(facts.shifts) == 2
    assert combined[revoked.id].badge_revoked and not facts.badge_revoked
    assert combined[bare.id].holder_status == "suspended"


def test_the_batch_reads_in_one_statement_read_what_they_read_one_by_one(
    instance: Instance, site: Site, engine: Engine
) -> None:
    badge = badged_holder(instance, site, ["STADIUM-PERIMETER"], NOW)
    with session_factory(engine)() as s, s.begin():
        s.add(Occupancy(zone="STADIUM-BOWL", count=41))
    with transaction(engine) as raw:
        # Some nonces of the audit (the badge's issue left entries) and one that is not there.
        refs = [r[0] for r in raw.rows("SELECT ref FROM audit_entries WHERE ref IS NOT NULL")] + ["no-such-nonce"]
        reads = [earlier_query(raw, refs), THREAT_LEVEL_QUERY, OCCUPANCY_QUERY]
        plain = [raw.rows(*q) for q in reads]
        combined = raw.rows_combined(reads)
    assert [[_comparable(raw, row) for row in rows] for rows in combined] == [
        [_comparable(raw, row) for row in rows] for rows in plain
    ]
    assert combined[2] == [("STADIUM-BOWL", 41)]
    assert badge.id  # the badge's issue wrote audit entries, so the first read is not empty either
    assert len(combined[0]) == len(refs) - 1


def _comparable(raw: Raw, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Times as the decision service reads them (`Raw.when`); the rest as is."""
    out = []
    for value in row:
        if isinstance(value, dt.datetime) or (isinstance(value, str) and _looks_like_time(value)):
            value = raw.when(value)
        out.append(value)
    return tuple(out)


def _looks_like_time(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return len(text) >= 19
