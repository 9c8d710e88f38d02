"""Who may see holders' personal details on the web side: the one rule, and helpers that apply it.

Names (and the contingent's own reference) go to the roles in app.config NAME_ROLES, photos to the roles in
PHOTO_ROLES; every other role sees the holder's opaque id only. A holder whose personal data retention removed has
no name left to show to anyone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import Holder

REMOVED = "(personal data removed)"


@dataclass(frozen=True)
class Disclosure:
    """What one operator may see of a holder."""

    names: bool
    photo: bool


def disclosure(role: str | None, name_roles: Collection[str], photo_roles: Collection[str]) -> Disclosure:
    """The rule: a role sees names only if it has the name right, photos only if it has the photo right."""
    if role is None:
        return Disclosure(names=False, photo=False)
    return Disclosure(names=role in name_roles, photo=role in photo_roles)


def for_operator() -> Disclosure:
    """The rule applied to the operator of this request, with this app's configured rights."""
    operator = g.get("operator")
    return disclosure(
        operator.role if operator is not None else None,
        current_app.config["NAME_ROLES"],
        current_app.config["PHOTO_ROLES"],
    )


def holder_label(holder_id: str, family_name: str, given_name: str, removed: bool, seen: Disclosure) -> str:
    """How a holder is named on a page for an operator who may see `seen`."""
    if not holder_id:
        return ""
    if removed:
        return f"{REMOVED} {holder_id}"
    if not seen.names:
        return holder_id
    return f"{family_name.upper()} {given_name}"


def holder_labels(session: Session, holder_ids: Iterable[str], seen: Disclosure) -> dict[str, str]:
    """Labels for many holders at once, by id (unknown ids are shown as they are)."""
    ids = sorted({h for h in holder_ids if h})
    labels = {h: h for h in ids}
    if not ids:
        return labels
    if not seen.names:
        return labels  # nothing from the holders table is shown: do not even read it
    rows = session.execute(
        select(Holder.id, Holder.family_name, Holder.given_name, Holder.personal_data_removed_at).where(
            Holder.id.in_(ids)
        )
    )
    for holder_id, family, given, removed_at in rows:
        labels[holder_id] = holder_label(holder_id, family, given, removed_at is not None, seen)
    return labels


def init_app(app: Flask) -> None:
    """Templates ask `personal().names` / `personal().photo` rather than checking roles themselves."""

    @app.context_processor
    def _personal() -> dict[str, Any]:
        return {"personal": for_operator}
