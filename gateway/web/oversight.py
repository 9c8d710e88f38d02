"""What security leads look at: the decisions as they were logged."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template, request
from sqlalchemy import func, select

from gateway.db.models import DecisionRecord
from gateway.web.app import services
from gateway.web.auth import login_required

bp = Blueprint("oversight", __name__)


def _recent(limit: int) -> list[DecisionRecord]:
    with services().sessions() as s:
        return list(s.scalars(select(DecisionRecord).order_by(DecisionRecord.seq.desc()).limit(limit)))


@bp.get("/")
@login_required("lead", "desk")
def index() -> Any:
    with services().sessions() as s:
        total = s.scalar(select(func.count()).select_from(DecisionRecord)) or 0
        denied = (
            s.scalar(select(func.count()).select_from(DecisionRecord).where(DecisionRecord.allow.is_(False)))
            or 0
        )
    return render_template(
        "decisions.html", rows=_recent(100), total=total, denied=denied, site=services().site
    )


@bp.get("/api/v1/decisions")
@login_required("lead")
def api_decisions() -> Any:
    limit = min(max(request.args.get("limit", 100, type=int), 1), 1000)
    return jsonify(
        [
            {
                "seq": r.seq,
                "decided_at": r.decided_at.isoformat(timespec="milliseconds"),
                "reader": r.reader,
                "gate": r.gate,
                "badge": r.badge_id,
                "holder": r.holder_id,
                "allow": r.allow,
                "reason": r.reason,
                "detail": r.detail,
                "mode": r.mode,
                "nonce": r.nonce,
            }
            for r in _recent(limit)
        ]
    )
