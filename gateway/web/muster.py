"""Muster: who is inside each zone now, from confirmed passages at the turnstiles. Printable.

Names and photos are shown as gateway/web/personal.py allows the operator's role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, render_template
from sqlalchemy import select

from gateway.db.models import Holder, Organisation, Position
from gateway.site import OUTSIDE
from gateway.web.app import services
from gateway.web.auth import login_required
from gateway.web.personal import for_operator, holder_label

bp = Blueprint("muster", __name__)


@dataclass(frozen=True)
class Present:
    holder_id: str
    name: str  # as this operator may see it
    has_photo: bool
    organisation: str
    role: str
    gate: str
    since: Any


@bp.get("/muster")
@login_required("lead")
def muster() -> Any:
    svc = services()
    seen = for_operator()
    with svc.sessions() as s:
        rows = s.execute(
            select(
                Position.zone,
                Holder.id,
                Holder.family_name,
                Holder.given_name,
                Holder.personal_data_removed_at,
                Holder.photo.is_not(None),
                Organisation.name,
                Holder.role,
                Position.gate,
                Position.since,
            )
            .join(Holder, Holder.id == Position.holder_id)
            .join(Organisation, Organisation.id == Holder.organisation_id)
            .where(Position.zone != OUTSIDE)
            .order_by(Position.zone, Holder.family_name, Holder.given_name)
        ).all()
    by_zone: dict[str, list[Present]] = {code: [] for code in svc.site.zones}
    for zone, holder_id, family, given, removed_at, has_photo, organisation, role, gate, since in rows:
        name = holder_label(holder_id, family, given, removed_at is not None, seen)
        by_zone.setdefault(zone, []).append(
            Present(holder_id, name, bool(has_photo) and seen.photo, organisation, role, gate, since)
        )
    return render_template("muster.html", zones=svc.site.zones, by_zone=by_zone, taken_at=svc.now(), total=len(rows))
