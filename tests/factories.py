"""Building blocks for tests that need a decision service or a holder with a badge, on the test's instance."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from sqlalchemy import Engine

from gateway import badges
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import Badge
from gateway.decisions import DecisionService
from gateway.instance import Instance
from gateway.site import Site


def decision_service(
    instance: Instance, site: Site, clock: Callable[[], dt.datetime], engine: Engine | None = None
) -> DecisionService:
    """The instance's decision service; on `engine` when given (the decision process's own, say)."""
    return DecisionService(
        site=site,
        keyring=lambda: instance.keyring,
        issuer=instance.settings.issuer,
        sessions=session_factory(engine or make_engine(instance.settings.database_url)),
        clock=clock,
    )


def badged_holder(
    instance: Instance,
    site: Site,
    zones: Sequence[str],
    now: dt.datetime,
    *,
    role: str = "police",
    organisation: tuple[str, str, str, str] = ("TEST-ORG", "Test contingent", "police", "FR"),
    name: tuple[str, str] = ("Martin", "Lea"),
    valid: tuple[dt.timedelta, dt.timedelta] = (dt.timedelta(hours=-1), dt.timedelta(days=3)),
    revoked: bool = False,
) -> Badge:
    """Register a holder and issue their badge for `zones`, valid from now+valid[0] to now+valid[1]."""
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s, s.begin():
        org = badges.get_or_create_organisation(s, *organisation)
        holder = badges.register_holder(s, site, org, name[0], name[1], role, organisation[3], now)
        badge = badges.issue_badge(
            s,
            site,
            instance.keyring,
            instance.settings.issuer,
            holder,
            list(zones),
            now + valid[0],
            now + valid[1],
            now,
        )
        if revoked:
            badges.revoke_badge(s, badge.id, "reported stolen", now)
    return badge
