"""Operators (desk staff, security leads, administrators), their passwords and their API tokens.

Roles: `desk` registers holders and issues badges; `lead` watches decisions and the audit and may look holders
up, but never issues; `admin` may do everything, and alone manages operators, keys and the site.
An API token is shown once; only its SHA-256 is stored, so a copy of the database lets nobody in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from gateway.db.models import ApiToken, Operator
from gateway.holders import DeskError

ROLES = ("desk", "lead", "admin")
TOKEN_PREFIX = "agw_"
MIN_PASSWORD = 10
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{1,63}\Z")
_LAST_USED_GRANULARITY = dt.timedelta(minutes=5)  # fewer writes: last use is a hint, not an audit


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def check_password(operator: Operator, password: str) -> bool:
    return check_password_hash(operator.password_hash, password)


def find(session: Session, username: str) -> Operator | None:
    return session.scalar(select(Operator).where(Operator.username == username))


def create(session: Session, username: str, role: str, password: str, now: dt.datetime) -> Operator:
    problems = []
    if not _USERNAME.match(username):
        problems.append("a user name is 2 to 64 letters, digits or . _ @ -")
    if role not in ROLES:
        problems.append(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        problems.append(f"a password has at least {MIN_PASSWORD} characters")
    if find(session, username) is not None:
        problems.append(f"operator {username!r} exists already")
    if problems:
        raise DeskError(*problems)
    operator = Operator(
        username=username, password_hash=hash_password(password), role=role, active=True, created_at=now
    )
    session.add(operator)
    session.flush()
    return operator


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_token(session: Session, operator: Operator, name: str, now: dt.datetime) -> tuple[str, ApiToken]:
    """A new token for scripts acting as `operator`; the text is returned once and never stored."""
    name = name.strip()[:64] or "api"
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(operator_id=operator.id, name=name, token_hash=_digest(token), created_at=now)
    session.add(row)
    session.flush()
    return token, row


def operator_for_token(session: Session, token: str, now: dt.datetime) -> Operator | None:
    """The active operator a presented API token stands for, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(token)))
    if row is None or row.revoked_at is not None:
        return None
    operator = session.get(Operator, row.operator_id)
    if operator is None or not operator.active:
        return None
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_GRANULARITY:
        row.last_used_at = now
    return operator


def tokens_of(session: Session, operator_id: int) -> list[ApiToken]:
    return list(
        session.scalars(select(ApiToken).where(ApiToken.operator_id == operator_id).order_by(ApiToken.id.desc()))
    )


def revoke_api_token(session: Session, operator_id: int, token_id: int, now: dt.datetime) -> None:
    row = session.get(ApiToken, token_id)
    if row is None or row.operator_id != operator_id:
        raise DeskError("no such API token")
    row.revoked_at = row.revoked_at or now
