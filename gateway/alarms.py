"""Alarms: the audit entries a security lead must look at and acknowledge, in one place.

An alarm is an audit entry whose (kind, reason) is in ALARMS. A lead's acknowledgement is itself an audit entry
(kind "alarm_ack", operator = the lead, ref = the alarm's seq), so the audit alone says which alarms are still open,
and the unique `ref` makes a second acknowledgement of the same alarm impossible, even from another process.
To add an alarm, add its (kind, reason) to ALARMS: the leads' pages, the live monitor and the query follow.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, String, and_, cast, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from gateway import audit
from gateway.db.models import AuditEntry

# (audit kind, reason): what the turnstiles and readers report that a lead must look at.
# Gate events use the event kind as reason; reader status entries use reader_<state>.
ALARMS: frozenset[tuple[str, str]] = frozenset(
    {
        ("gate_event", "door_forced"),
        ("gate_event", "door_held_open"),
        ("gate_event", "tamper"),
        ("gate_event", "controller_offline"),
        ("reader_status", "reader_offline"),
        ("bridge_status", "bridge_offline"),  # a bridge's last will, or its clean stop (gateway/reader_monitor.py)
        ("alarm", "forced_grant"),  # a guard forced a grant at a reader's gate page (gateway/manual_decisions.py)
        ("alarm", "reader_clock_skew"),  # a reader's clock is off by more than 30 s (gateway/clock_skew.py)
    }
)
ACK_KIND = "alarm_ack"

ALARM_KINDS: tuple[str, ...] = tuple(sorted({kind for kind, _ in ALARMS}))
ALARM_REASONS: tuple[str, ...] = tuple(sorted({reason for _, reason in ALARMS}))


class AlarmError(ValueError):
    """The entry cannot be acknowledged: no such alarm, or it is acknowledged already."""


def is_alarm(kind: str, reason: str) -> bool:
    return (kind, reason) in ALARMS


def alarm_clause(entry: type[AuditEntry] | None = None) -> ColumnElement[bool]:
    """SQL condition: this audit row is an alarm (each kind with its own reasons, not every combination)."""
    e = entry or AuditEntry
    return or_(*(and_(e.kind == kind, e.reason.in_(sorted(r for k, r in ALARMS if k == kind))) for kind in ALARM_KINDS))


def _acknowledged(alarm: type[AuditEntry]) -> ColumnElement[bool]:
    ack = aliased(AuditEntry)
    return exists().where(ack.kind == ACK_KIND, ack.ref == cast(alarm.seq, String))


def recent_alarms(session: Session, limit: int) -> list[AuditEntry]:
    """The latest alarms, acknowledged or not, newest first."""
    query = select(AuditEntry).where(alarm_clause()).order_by(AuditEntry.seq.desc()).limit(limit)
    return list(session.scalars(query))


def unacknowledged(session: Session, limit: int = 500, up_to: int | None = None) -> list[AuditEntry]:
    """Alarms no lead has acknowledged yet, newest first (up to entry `up_to`, for a consistent snapshot)."""
    query = select(AuditEntry).where(alarm_clause(), ~_acknowledged(AuditEntry))
    if up_to is not None:
        query = query.where(AuditEntry.seq <= up_to)
    return list(session.scalars(query.order_by(AuditEntry.seq.desc()).limit(limit)))


def acknowledgements(session: Session, seqs: list[int]) -> dict[int, AuditEntry]:
    """The acknowledgement of each of these alarms that has one, by alarm seq."""
    if not seqs:
        return {}
    rows = session.scalars(
        select(AuditEntry).where(AuditEntry.kind == ACK_KIND, AuditEntry.ref.in_([str(s) for s in seqs]))
    )
    return {int(row.ref or 0): row for row in rows}


def acknowledge(session: Session, seq: int, operator: str, now: dt.datetime, note: str = "") -> AuditEntry:
    """Log that `operator` has dealt with alarm `seq`; inside the caller's transaction (the caller commits)."""
    alarm = session.get(AuditEntry, seq)
    if alarm is None or not is_alarm(alarm.kind, alarm.reason):
        raise AlarmError(f"entry {seq} is not an alarm")
    if session.scalar(select(AuditEntry.seq).where(AuditEntry.kind == ACK_KIND, AuditEntry.ref == str(seq))):
        raise AlarmError(f"alarm {seq} is already acknowledged")
    where = alarm.gate or alarm.reader or "?"
    detail = f"{alarm.reason.replace('_', ' ')} at {where}" + (f": {note.strip()}" if note.strip() else "")
    try:
        return audit.record_action(session, ACK_KIND, now, ref=str(seq), operator=operator, detail=detail[:500])
    except IntegrityError:  # another lead acknowledged it at the same moment; the caller's transaction rolls back
        raise AlarmError(f"alarm {seq} is already acknowledged") from None
