"""Muster: who is inside each zone now, from confirmed passages at the turnstiles. Printable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, render_template
from sqlalchemy import select

from gateway.db.models import Holder, Organisation, Position
from gateway.site import OUTSIDE
from gateway.web.app import services
from gateway.web.auth import login_required

bp = Blueprint("muster", __name__)


@dataclass(frozen=True)
class Present:
    family_name: str
    given_name: str
    organisation: str
    role: str
    gate: str
    since: Any


@bp.get("/muster")
@login_required("lead")
def muster() -> Any:
    svc = services()
    with svc.sessions() as s:
        rows = s.execute(
            select(
                Position.zone,
                Holder.family_name,
                Holder.given_name,
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
    for zone, family, given, organisation, role, gate, since in rows:
        by_zone.setdefault(zone, []).append(Present(family, given, organisation, role, gate, since))
    return render_template("muster.html", zones=svc.site.zones, by_zone=by_zone, taken_at=svc.now(), total=len(rows))
