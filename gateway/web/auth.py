"""Operator login (Flask-Login), CSRF protection for every form (Flask-WTF), and the role check on every view.

Pages log in with a session cookie. Scripts send `Authorization: Bearer <API token>`; the JSON API accepts
nothing else (so a browser's cookie can never drive it: no CSRF there), and pages never take a token.
Every login, and every failed attempt, is written to the audit.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Blueprint, Flask, abort, g, jsonify, redirect, render_template, request, session, url_for
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf

from gateway import audit, operators
from gateway.db.models import Operator
from gateway.operators import ROLES, hash_password
from gateway.rate_limit import LoginThrottle
from gateway.web.app import services

__all__ = ["ROLES", "hash_password", "login_required"]

bp = Blueprint("auth", __name__)
csrf = CSRFProtect()
login_manager = LoginManager()
F = TypeVar("F", bound=Callable[..., Any])
_throttle_lock = threading.Lock()  # the throttle is shared by the server's request threads


@dataclass
class LoggedIn:
    """The operator of this request, as Flask-Login and the templates see them (never the ORM row)."""

    id: int
    username: str
    role: str
    via_token: bool = False
    is_authenticated: bool = True
    is_active: bool = True
    is_anonymous: bool = False

    def get_id(self) -> str:
        return str(self.id)

    @classmethod
    def of(cls, op: Operator, via_token: bool = False) -> LoggedIn:
        return cls(op.id, op.username, op.role, via_token)


def csrf_token() -> str:
    return str(generate_csrf())


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def is_api_request() -> bool:
    return request.path.startswith("/api/")


@login_manager.user_loader  # type: ignore[untyped-decorator]
def _load_user(user_id: str) -> LoggedIn | None:
    if not user_id.isdigit():
        return None
    with services().sessions() as s:
        op = s.get(Operator, int(user_id))
        return LoggedIn.of(op) if op is not None and op.active else None


@login_manager.request_loader  # type: ignore[untyped-decorator]
def _load_from_token(req: Any) -> LoggedIn | None:
    token = bearer_token()
    if token is None or not is_api_request():
        return None
    svc = services()
    with svc.sessions() as s, s.begin():
        op = operators.operator_for_token(s, token, svc.now())
        return LoggedIn.of(op, via_token=True) if op is not None else None


@login_manager.unauthorized_handler  # type: ignore[untyped-decorator]
def _unauthorized() -> Any:
    if is_api_request():
        response = jsonify({"error": "unauthorized", "detail": "send 'Authorization: Bearer <API token>'"})
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="accessgw"'
        return response
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.session_protection = "basic"
    csrf.init_app(app)
    app.jinja_env.globals["csrf_token"] = csrf_token

    @app.before_request
    def expose_operator() -> None:
        g.operator = current_user if current_user.is_authenticated else None

    @app.errorhandler(CSRFError)
    def csrf_refused(exc: CSRFError) -> Any:
        return render_template("error.html", code=400, message=f"{exc.description} Reload the page and try again."), 400

    @app.errorhandler(403)
    def forbidden(exc: Any) -> Any:
        if is_api_request():
            return jsonify({"error": "forbidden", "detail": "your role may not do this"}), 403
        return render_template("error.html", code=403, message="Your role may not open this page."), 403

    @app.errorhandler(404)
    def not_found(exc: Any) -> Any:
        if is_api_request():
            return jsonify({"error": "not_found", "detail": getattr(exc, "description", "")}), 404
        return render_template("error.html", code=404, message="No such page or record."), 404

    @app.errorhandler(413)
    def too_large(exc: Any) -> Any:
        message = "The upload is too large (at most 10 MB for a CSV file, 8 MB for a photo)."
        if is_api_request():
            return jsonify({"error": "too_large", "detail": message}), 413
        return render_template("error.html", code=413, message=message), 413


def login_required(*roles: str) -> Callable[[F], F]:
    """Logged-in operators only; with roles, only those roles (administrators pass every check)."""

    def wrap(view: F) -> F:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if roles and current_user.role not in roles and current_user.role != "admin":
                abort(403)
            return view(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def may(*roles: str) -> bool:
    """For templates: may the current operator use a feature reserved to `roles`?"""
    return bool(current_user.is_authenticated and (current_user.role in roles or current_user.role == "admin"))


def home_for(role: str) -> str:
    return url_for("oversight.index") if role == "lead" else url_for("desk.holders")


def _audit_login(username: str, allowed: bool, detail: str) -> None:
    svc = services()
    now = svc.now()
    with svc.sessions() as s, s.begin():
        audit.record_action(
            s,
            "operator_login",
            now,
            operator=username[:64],
            allow=allowed,
            reason="" if allowed else "refused",
            detail=f"{detail}; from {request.remote_addr or '?'}"[:500],
        )


def _login_throttle() -> LoginThrottle:
    throttle: LoginThrottle = services().extras.setdefault("login_throttle", LoginThrottle())
    return throttle


def _audit_lockout(username: str, lockout_s: float) -> None:
    svc = services()
    now = svc.now()
    with svc.sessions() as s, s.begin():
        audit.record_action(
            s,
            "operator_lockout",
            now,
            operator=username[:64],
            allow=False,
            reason="too_many_failures",
            detail=f"login refused for {int(lockout_s)} s after repeated wrong passwords; "
            f"from {request.remote_addr or '?'}"[:500],
        )


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        throttle, key = _login_throttle(), LoginThrottle.key(username, request.remote_addr or "?")
        now_s = services().now().timestamp()
        with _throttle_lock:
            wait_s = throttle.locked_for(key, now_s)
        if wait_s > 0:
            # Refused before the password is even checked, so guessing goes no faster during the lockout.
            _audit_login(username or "(empty)", False, "locked out after repeated wrong passwords")
            minutes = int(wait_s // 60) + 1
            error = f"Too many wrong passwords. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
            return render_template("login.html", error=error), 429
        with services().sessions() as s:
            op = operators.find(s, username)
            ok = op is not None and op.active and operators.check_password(op, password)
            who = LoggedIn.of(op) if ok and op is not None else None
        if who is not None:
            with _throttle_lock:
                throttle.succeeded(key)
            _audit_login(who.username, True, "web login")
            session.clear()  # a fresh session (and CSRF token) for the new login: no fixation
            login_user(who)
            target = request.args.get("next", "")
            safe = target.startswith("/") and not target.startswith("//") and "\\" not in target
            return redirect(target if safe else home_for(who.role))
        _audit_login(username or "(empty)", False, "wrong user name or password")
        with _throttle_lock:
            locked = throttle.failed(key, now_s)
        if locked:
            _audit_lockout(username or "(empty)", throttle.lockout_s)
        error = "Unknown user or wrong password."
    return render_template("login.html", error=error), 401 if error else 200


@bp.post("/logout")
def logout() -> Any:
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@bp.app_context_processor
def _template_helpers() -> dict[str, Any]:
    return {"may": may}
