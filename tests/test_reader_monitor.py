"""Readers going offline and back are audited once per change, whatever the heartbeats and however many workers."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from gateway import contract
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.mqttlink import BrokerAddress
from gateway.reader_monitor import ReaderMonitor

NOW = dt.datetime(2026, 7, 24, 18, 0, tzinfo=dt.UTC)


def status(state: str, at_ms: int, reader: str = "STA-G1-IN") -> contract.ReaderStatus:
    return contract.ReaderStatus(
        reader=reader, state=state, at_ms=at_ms, frames=10, decodes=2, decisions=1, offline_queue=0
    )


def monitor(instance, site) -> ReaderMonitor:  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    return ReaderMonitor(BrokerAddress("127.0.0.1", 1, "gateway", "unused"), "m", site, sessions, lambda: NOW)


def logged(instance) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.kind == "reader_status").order_by(AuditEntry.seq))
        return [(r.reader, r.gate, r.reason) for r in rows]


def test_each_change_is_logged_once_and_heartbeats_are_not(instance, site) -> None:  # type: ignore[no-untyped-def]
    first, second = monitor(instance, site), monitor(instance, site)  # two gateway workers
    base = 1_785_000_000_000
    assert first.record(status("online", base))
    assert not second.record(status("online", base))  # the same message, heard by the other worker
    assert not first.record(status("online", base + 10_000))  # heartbeat
    assert first.record(status("offline", base))  # the last will
    assert not second.record(status("offline", base))
    assert second.record(status("online", base + 60_000))  # back
    assert logged(instance) == [
        ("STA-G1-IN", "STA-G1", "reader_online"),
        ("STA-G1-IN", "STA-G1", "reader_offline"),
        ("STA-G1-IN", "STA-G1", "reader_online"),
    ]


def test_a_restarted_gateway_does_not_log_the_retained_state_again(instance, site) -> None:  # type: ignore[no-untyped-def]
    assert monitor(instance, site).record(status("offline", 5, reader="CDG-G2-IN"))
    restarted = monitor(instance, site)
    assert not restarted.record(status("offline", 5, reader="CDG-G2-IN"))
    assert logged(instance) == [("CDG-G2-IN", "CDG-G2", "reader_offline")]
