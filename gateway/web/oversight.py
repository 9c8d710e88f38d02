"""What security leads look at: alarms from the gates and readers, and the decisions as they were logged."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template, request
from sqlalchemy import func, select

from gateway.db.models import AuditEntry
from gateway.web.app import services
from gateway.web.auth import login_required

bp = Blueprint("oversight", __name__)


def _recent(limit: int) -> list[AuditEntry]:
    with services().sessions() as s:
        return list(
            s.scalars(
                select(AuditEntry).where(AuditEntry.kind == "decision").order_by(AuditEntry.seq.desc()).limit(limit)
            )
        )


# What the turnstiles and readers report that a lead must look at (gate events use the event kind as reason).
ALARM_REASONS = ("door_forced", "door_held_open", "tamper", "controller_offline", "reader_offline")


def recent_alarms(limit: int) -> list[AuditEntry]:
    with services().sessions() as s:
        query = (
            select(AuditEntry)
            .where(AuditEntry.kind.in_(("gate_event", "reader_status")), AuditEntry.reason.in_(ALARM_REASONS))
            .order_by(AuditEntry.seq.desc())
            .limit(limit)
        )
        return list(s.scalars(query))


@bp.get("/")
@login_required("lead", "desk")
def index() -> Any:
    with services().sessions() as s:
        total = s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.kind == "decision")) or 0
        denied = (
            s.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.kind == "decision", AuditEntry.allow.is_(False))
            )
            or 0
        )
    return render_template(
        "decisions.html",
        rows=_recent(100),
        total=total,
        denied=denied,
        site=services().site,
        alarms=recent_alarms(20),
    )


@bp.get("/api/v1/decisions")
@login_required("lead")
def api_decisions() -> Any:
    limit = min(max(request.args.get("limit", 100, type=int), 1), 1000)
    return jsonify(
        [
            {
                "seq": r.seq,
                "decided_at": r.at.isoformat(timespec="milliseconds"),
                "reader": r.reader,
                "gate": r.gate,
                "badge": r.badge_id,
                "holder": r.holder_id,
                "allow": r.allow,
                "reason": r.reason,
                "detail": r.detail,
                "mode": r.mode,
                "nonce": r.ref,
            }
            for r in _recent(limit)
        ]
    )
