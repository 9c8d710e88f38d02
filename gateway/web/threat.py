"""The threat level page: leads see the current level and its history, and switch it."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from gateway.decisions import current_threat_level
from gateway.threat import ThreatLevelError, history, set_threat_level
from gateway.web.app import services
from gateway.web.auth import login_required

bp = Blueprint("threat", __name__)


@bp.get("/threat-level")
@login_required("lead")
def show() -> Any:
    svc = services()
    with svc.sessions() as s:
        level = current_threat_level(s, svc.site)
        past = history(s)
    return render_template("threat_level.html", level=level, levels=svc.site.threat_levels, history=past)


@bp.post("/threat-level")
@login_required("lead")
def switch() -> Any:
    svc = services()
    level = request.form.get("level", "")
    why = request.form.get("why", "").strip()[:200]
    try:
        with svc.sessions() as s, s.begin():
            previous = set_threat_level(s, svc.site, level, g.operator.username, svc.now(), why)
    except ThreatLevelError as exc:
        abort(400, description=str(exc))
    flash(f"Threat level switched from {previous} to {level}.")
    return redirect(url_for("threat.show"))
