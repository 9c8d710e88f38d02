"""The site's threat level: switched by a lead, audited, and read by the very next decision."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import audit
from gateway.db.models import AuditEntry, SiteState
from gateway.decisions import THREAT_LEVEL_KEY, current_threat_level
from gateway.site import Site


class ThreatLevelError(ValueError):
    pass


def set_threat_level(session: Session, site: Site, level: str, operator: str, now: dt.datetime, why: str = "") -> str:
    """Switch the level (inside the caller's transaction); returns the previous level."""
    if level not in site.threat_levels:
        raise ThreatLevelError(f"unknown threat level {level!r}; the site has {', '.join(site.threat_levels)}")
    previous = current_threat_level(session, site)
    row = session.get(SiteState, THREAT_LEVEL_KEY)
    if row is None:
        session.add(SiteState(key=THREAT_LEVEL_KEY, value=level, changed_at=now, changed_by=operator))
    else:
        row.value, row.changed_at, row.changed_by = level, now, operator
    audit.record_action(
        session,
        "threat_level",
        now,
        operator=operator,
        reason=level,
        detail=f"{previous} -> {level}" + (f": {why}" if why else ""),
    )
    return previous


def history(session: Session, limit: int = 50) -> list[AuditEntry]:
    query = select(AuditEntry).where(AuditEntry.kind == "threat_level").order_by(AuditEntry.seq.desc()).limit(limit)
    return list(session.scalars(query))
