"""Administration: operators, badge keys (rotate, retire), the site as zones.yaml says; and each operator's API
tokens. Key changes are audited in the same transaction as nothing else: the key files change first, then the
audit entry is committed (a failed audit write is reported, and the files say what happened)."""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select

from gateway import audit, operators
from gateway.db.models import Operator
from gateway.holders import DeskError
from gateway.instance import InstanceError, badge_keys, retire_badge_key, rotate_badge_key
from gateway.web.app import services
from gateway.web.auth import login_required

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/operators", endpoint="operators")
@login_required("admin")
def operators_page() -> Any:
    with services().sessions() as s:
        rows = list(s.scalars(select(Operator).order_by(Operator.username)))
    return render_template("admin/operators.html", rows=rows, roles=operators.ROLES, new_password=None)


@bp.post("/operators")
@login_required("admin")
def create_operator() -> Any:
    svc = services()
    username = request.form.get("username", "").strip()
    role = request.form.get("role", "")
    password = secrets.token_urlsafe(12)
    try:
        with svc.sessions() as s, s.begin():
            operators.create(s, username, role, password, svc.now())
    except DeskError as exc:
        flash(str(exc), "error")
        return redirect(url_for("admin.operators"))
    with svc.sessions() as s:
        rows = list(s.scalars(select(Operator).order_by(Operator.username)))
    return render_template("admin/operators.html", rows=rows, roles=operators.ROLES, new_password=(username, password))


@bp.post("/operators/<int:operator_id>/active")
@login_required("admin")
def set_active(operator_id: int) -> Any:
    with services().sessions() as s, s.begin():
        op = s.get(Operator, operator_id)
        if op is None:
            abort(404)
        if op.id == g.operator.id:
            flash("You cannot switch yourself off.", "error")
        else:
            op.active = request.form.get("active") == "1"
            flash(f"{op.username} is {'active' if op.active else 'switched off: logged out everywhere'}.")
    return redirect(url_for("admin.operators"))


@bp.get("/keys")
@login_required("admin")
def keys() -> Any:
    return render_template("admin/keys.html", keys=badge_keys(services().folder))


def _audit_key(kind: str, detail: str) -> None:
    svc = services()
    now = svc.now()
    with svc.sessions() as s, s.begin():
        audit.record_action(s, kind, now, operator=g.operator.username, detail=detail)


@bp.post("/keys/rotate")
@login_required("admin")
def rotate() -> Any:
    old, new = rotate_badge_key(services().folder)
    _audit_key("key_rotated", f"new badges are signed with key {new}; key {old} stays accepted until retired")
    flash(f"New badges are now signed with key {new}. Badges signed with {old} stay valid until you retire it.")
    return redirect(url_for("admin.keys"))


@bp.post("/keys/<kid>/retire")
@login_required("admin")
def retire(kid: str) -> Any:
    try:
        retire_badge_key(services().folder, kid)
    except InstanceError as exc:
        flash(str(exc), "error")
        return redirect(url_for("admin.keys"))
    _audit_key("key_retired", f"key {kid} retired: badges it signed are refused from now on")
    flash(f"Key {kid} is retired: every badge it signed is refused from now on.")
    return redirect(url_for("admin.keys"))


@bp.get("/site")
@login_required("admin")
def site() -> Any:
    svc = services()
    return render_template("admin/site.html", site=svc.site, issuer=svc.instance.settings.issuer)


# --- every operator's own API tokens ------------------------------------------------------------------


@bp.get("/tokens")
@login_required()
def tokens() -> Any:
    with services().sessions() as s:
        rows = operators.tokens_of(s, g.operator.id)
    return render_template("admin/tokens.html", rows=rows, new_token=None)


@bp.post("/tokens")
@login_required()
def create_token() -> Any:
    svc = services()
    with svc.sessions() as s, s.begin():
        op = s.get(Operator, g.operator.id)
        assert op is not None
        token, _ = operators.new_api_token(s, op, request.form.get("name", ""), svc.now())
    with svc.sessions() as s:
        rows = operators.tokens_of(s, g.operator.id)
    return render_template("admin/tokens.html", rows=rows, new_token=token)


@bp.post("/tokens/<int:token_id>/revoke")
@login_required()
def revoke_token(token_id: int) -> Any:
    svc = services()
    try:
        with svc.sessions() as s, s.begin():
            operators.revoke_api_token(s, g.operator.id, token_id, svc.now())
        flash("The token no longer works.")
    except DeskError as exc:
        flash(str(exc), "error")
    return redirect(url_for("admin.tokens"))
