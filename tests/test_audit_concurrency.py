"""Several decision workers writing at once still make one linear, verifiable audit chain (both databases)."""

from __future__ import annotations

import datetime as dt
import secrets
import threading

from sqlalchemy import func, select

from gateway import badges, contract
from gateway.audit_verify import verify_database
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.decisions import DecisionService

NOW = dt.datetime(2026, 7, 24, 18, 0, tzinfo=dt.UTC)


def test_two_workers_write_one_chain(instance, site) -> None:  # type: ignore[no-untyped-def]
    url = instance.settings.database_url
    setup = session_factory(make_engine(url))
    with setup() as s, s.begin():
        org = badges.get_or_create_organisation(s, "SEC-9", "Securitas", "private_security", "FR")
        holder = badges.register_holder(s, site, org, "Roux", "Emma", "private_guard", "FR", NOW)
        badge = badges.issue_badge(
            s,
            site,
            instance.keyring,
            instance.settings.issuer,
            holder,
            ["STADIUM-PERIMETER"],
            NOW - dt.timedelta(hours=1),
            NOW + dt.timedelta(days=1),
            NOW,
        )
    # Each worker has its own engine and connection pool, as separate processes would.
    workers = [
        DecisionService(
            site=site,
            keyring=lambda: instance.keyring,
            issuer=instance.settings.issuer,
            sessions=session_factory(make_engine(url)),
            clock=lambda: NOW,
        )
        for _ in range(2)
    ]
    shared = [secrets.token_hex(16) for _ in range(10)]  # both workers get these: each must be logged once
    errors: list[BaseException] = []

    def work(service: DecisionService) -> None:
        try:
            for i in range(15):
                nonces = [secrets.token_hex(16) for _ in range(3)] + [shared[i % len(shared)]]
                requests = [
                    contract.DecisionRequest(reader="STA-G1-IN", nonce=n, token=badge.token, sent_ms=0) for n in nonces
                ]
                answers = service.answer_many(requests)
                assert all(a.reason == "granted" for a in answers), [a.reason for a in answers]
        except BaseException as exc:  # reported below, with the thread's own failure
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    with setup() as s:
        assert verify_database(s, [], {}).ok
        decisions = s.scalar(select(func.count()).where(AuditEntry.kind == "decision")) or 0
        distinct = s.scalar(select(func.count(func.distinct(AuditEntry.ref))).where(AuditEntry.kind == "decision"))
        seqs = list(s.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)))
    assert decisions == distinct == 2 * 15 * 3 + len(shared)
    assert seqs == list(range(1, len(seqs) + 1))
