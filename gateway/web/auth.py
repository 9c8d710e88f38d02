"""Operator login for desk staff, security leads and administrators; CSRF tokens for every form."""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, Flask, abort, g, redirect, render_template, request, session, url_for
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from gateway.db.models import Operator
from gateway.web.app import services

bp = Blueprint("auth", __name__)
F = TypeVar("F", bound=Callable[..., Any])
ROLES = ("desk", "lead", "admin")


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return str(session["csrf"])


def init_app(app: Flask) -> None:
    app.jinja_env.globals["csrf_token"] = csrf_token

    @app.before_request
    def load_operator_and_check_csrf() -> None:
        g.operator = None
        op_id = session.get("operator_id")
        if op_id is not None:
            with services().sessions() as s:
                op = s.get(Operator, op_id)
                if op is not None and op.active:
                    g.operator = op
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
            if not hmac.compare_digest(sent, str(session.get("csrf", ""))) or not sent:
                abort(400, description="missing or wrong CSRF token: reload the page and try again")


def login_required(*roles: str) -> Callable[[F], F]:
    def wrap(view: F) -> F:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if g.operator is None:
                return redirect(url_for("auth.login", next=request.path))
            if roles and g.operator.role not in roles and g.operator.role != "admin":
                abort(403)
            return view(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        with services().sessions() as s:
            op = s.scalar(select(Operator).where(Operator.username == username))
        if op is not None and op.active and check_password_hash(op.password_hash, password):
            session.clear()
            session["operator_id"] = op.id
            csrf_token()
            target = request.args.get("next", "")
            return redirect(
                target
                if target.startswith("/") and not target.startswith("//")
                else url_for("oversight.index")
            )
        error = "Unknown user or wrong password."
    return render_template("login.html", error=error), 401 if error else 200


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("auth.login"))
