"""Where holders are: moved by confirmed passages from the turnstiles, never by grants alone.

A passage event carries the nonce of the grant it used; the grant's audit entry says who and which reader,
and the reader's side of its gate says which zone they walked into. A grant that was not used moves nobody.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.contract import GateEvent
from gateway.db.models import AuditEntry, Occupancy, Position
from gateway.site import OUTSIDE, Site

log = logging.getLogger(__name__)


def _count(session: Session, zone: str, delta: int) -> None:
    if zone == OUTSIDE:
        return
    row = session.get(Occupancy, zone)
    if row is None:
        session.add(Occupancy(zone=zone, count=max(delta, 0)))
    else:
        row.count = max(row.count + delta, 0)


def move(session: Session, holder_id: str, zone: str, gate: str, at: dt.datetime) -> None:
    """Record that the holder is now in `zone`, keeping occupancy in step (same transaction)."""
    position = session.get(Position, holder_id)
    if position is not None:
        if position.zone == zone:
            position.since, position.gate = at, gate
            return
        _count(session, position.zone, -1)
        position.zone, position.gate, position.since = zone, gate, at
    else:
        session.add(Position(holder_id=holder_id, zone=zone, gate=gate, since=at))
    _count(session, zone, +1)


def passage_hook(site: Site) -> Callable[[Session, GateEvent, AuditEntry], None]:
    """The gate-event hook: a passage moves its holder, in the same transaction as the event's audit entry."""

    def on_event(session: Session, event: GateEvent, entry: AuditEntry) -> None:
        if event.kind == "passage" and event.nonce:
            record_passage(session, site, event.nonce, entry.at)

    return on_event


def record_passage(session: Session, site: Site, nonce: str, at: dt.datetime) -> str | None:
    """Move the holder whose grant `nonce` was used; returns the zone, or None when nobody moves."""
    grant = session.scalar(select(AuditEntry).where(AuditEntry.ref == nonce, AuditEntry.kind == "decision"))
    if grant is None or not grant.allow or not grant.holder_id:
        log.warning("passage for nonce %s matches no grant; nobody moved", nonce)
        return None
    reader = site.readers.get(grant.reader)
    if reader is None:
        return None
    zone = site.target_zone(reader)
    move(session, grant.holder_id, zone, reader.gate, at)
    return zone
