"""Audits readers going offline and coming back, from their retained status messages and last wills.

Every gateway process hears every status (a plain subscription), so each change is keyed by a `ref` built from
the reader, the state and the reader's own timestamp: the first process to log it wins, the others and any
retained redelivery after a restart add nothing.

It also measures each reader's clock skew on every live (not retained) "online" status (gateway/clock_skew.py):
the latest is kept in `clock_skew` and written in the detail of the reader's status entries; a skew past the
threshold (30 s) is an audit entry of kind "alarm", reason "reader_clock_skew", and its return within the threshold
one of kind "reader_clock", reason "reader_clock_ok" (each keyed by ref "clock:<reader>:<at_ms>").

Bridges' retained statuses (contract.BridgeStatus) are audited the same way: kind "bridge_status", reason
"bridge_online" or "bridge_offline" (an alarm), ref "bridge:<bridge>:<state>:<sent_ms>", gate set for a bridge
of one gate.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway import audit, clock_skew, contract
from gateway.db.models import AuditEntry
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client
from gateway.site import Site

log = logging.getLogger(__name__)


class ReaderMonitor:
    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        site: Site,
        sessions: sessionmaker[Session],
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.address = address
        self.site = site
        self.sessions = sessions
        self.clock = clock
        self.client = make_client(
            address,
            client_id,
            [(contract.READER_STATUS_SUBSCRIPTION, 1), (contract.BRIDGE_STATUS_SUBSCRIPTION, 1)],
            on_message=self._on_message,
        )
        self._last: dict[str, str] = {}  # reader -> last state logged (heartbeats repeat "online")
        self._last_bridge: dict[str, str] = {}  # bridge -> last state logged
        self.clock_skew = clock_skew.ClockSkewTracker()
        self._skew_loaded: set[str] = set()  # readers whose standing skew alarm was looked up in the audit

    def start(self) -> None:
        connect_and_wait(self.client, self.address)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if mqtt.topic_matches_sub(contract.BRIDGE_STATUS_SUBSCRIPTION, msg.topic):
            self._on_bridge_status(msg)
            return
        try:
            status = contract.reader_status_on(msg.topic, bytes(msg.payload))
        except contract.ContractError as exc:
            log.warning("ignored status on %s: %s", msg.topic, exc)
            return
        reader = status.reader
        if status.state == "online" and not msg.retain:
            # A retained status may be hours old, and a will's at_ms is the connection's: only live ones count.
            try:
                self.observe_clock(status)
            except Exception:  # the database may be away; the next heartbeat measures again
                log.exception("clock skew of reader %s not logged", reader)
        try:
            self.record(status)
        except Exception:  # the database may be away; the retained status is delivered again on reconnect
            log.exception("status of reader %s not logged", reader)

    def observe_clock(self, status: contract.ReaderStatus) -> clock_skew.SkewChange | None:
        """Measure the reader's clock against ours; audit a crossing of the alarm threshold (either way)."""
        if status.reader not in self._skew_loaded:
            self._load_standing_alarm(status.reader)
        now = self.clock()
        change = self.clock_skew.observe(status.reader, status.at_ms, int(now.timestamp() * 1000))
        if change is None:
            return None
        known = self.site.readers.get(status.reader)
        off = f"reader clock {change.skew_ms / 1000:+.1f} s off the gateway's"
        entry = audit.Entry(
            kind="alarm" if change.alarm else "reader_clock",
            ref=f"clock:{status.reader}:{status.at_ms}",
            at=now,
            recorded_at=now,
            reader=status.reader,
            gate=known.gate if known else "",
            reason=clock_skew.ALARM_REASON if change.alarm else clock_skew.CLEARED_REASON,
            detail=f"{off} (threshold {self.clock_skew.threshold_ms / 1000:.0f} s)",
        )
        try:
            with self.sessions() as session, session.begin():
                audit.append(session, entry)
        except IntegrityError:
            pass  # another gateway process heard the same message and logged it
        except Exception:
            # Not recorded: start again from what the audit says at the next heartbeat.
            self._skew_loaded.discard(status.reader)
            if change.alarm:
                self.clock_skew.forget_alarm(status.reader)
            raise
        return change

    def _load_standing_alarm(self, reader: str) -> None:
        with self.sessions() as session:
            last = session.scalar(
                select(AuditEntry.reason)
                .where(
                    AuditEntry.reader == reader,
                    AuditEntry.kind.in_(("alarm", "reader_clock")),
                    AuditEntry.reason.in_((clock_skew.ALARM_REASON, clock_skew.CLEARED_REASON)),
                )
                .order_by(AuditEntry.seq.desc())
                .limit(1)
            )
        if last == clock_skew.ALARM_REASON:
            self.clock_skew.already_alarmed(reader)
        self._skew_loaded.add(reader)

    def _last_logged(self, session: Session, reader: str) -> str | None:
        if reader not in self._last:
            reason = session.scalar(
                select(AuditEntry.reason)
                .where(AuditEntry.kind == "reader_status", AuditEntry.reader == reader)
                .order_by(AuditEntry.seq.desc())
                .limit(1)
            )
            if reason:
                self._last[reader] = reason.removeprefix("reader_")
        return self._last.get(reader)

    def record(self, status: contract.ReaderStatus) -> bool:
        """Log a reader's change of state once; True when this call logged it."""
        with self.sessions() as session:
            if self._last_logged(session, status.reader) == status.state:
                return False  # a heartbeat, or a retained message heard again
        known = self.site.readers.get(status.reader)
        now = self.clock()
        entry = audit.Entry(
            kind="reader_status",
            ref=f"reader:{status.reader}:{status.state}:{status.at_ms}",
            at=dt.datetime.fromtimestamp(status.at_ms / 1000, dt.UTC),
            recorded_at=now,
            reader=status.reader,
            gate=known.gate if known else "",
            reason=f"reader_{status.state}",
            detail=f"frames {status.frames}, decodes {status.decodes}, decisions {status.decisions}, "
            f"offline queue {status.offline_queue}{self._skew_note(status.reader)}",
        )
        try:
            with self.sessions() as session, session.begin():
                audit.append(session, entry)
        except IntegrityError:
            self._last[status.reader] = status.state
            return False  # already logged by another gateway process
        self._last[status.reader] = status.state
        if status.state == "offline":
            log.warning("reader %s is OFFLINE", status.reader)
        return True

    def _skew_note(self, reader: str) -> str:
        skew = self.clock_skew.skew_of(reader)
        return "" if skew is None else f", clock skew {skew:+d} ms"

    # --- bridges -----------------------------------------------------------------------------------

    def _on_bridge_status(self, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:
            return  # a retained status cleared by hand: nothing happened to the bridge
        try:
            status = contract.bridge_status_on(msg.topic, bytes(msg.payload))
        except contract.ContractError as exc:
            log.warning("ignored status on %s: %s", msg.topic, exc)
            return
        bridge = status.bridge
        try:
            self.record_bridge(status)
        except Exception:  # the database may be away; the retained status is delivered again on reconnect
            log.exception("status of bridge %s not logged", bridge)

    def _last_bridge_logged(self, session: Session, bridge: str) -> str | None:
        if bridge not in self._last_bridge:
            reason = session.scalar(
                select(AuditEntry.reason)
                .where(AuditEntry.kind == "bridge_status")
                .where(AuditEntry.ref.startswith(f"bridge:{bridge}:", autoescape=True))
                .order_by(AuditEntry.seq.desc())
                .limit(1)
            )
            if reason:
                self._last_bridge[bridge] = reason.removeprefix("bridge_")
        return self._last_bridge.get(bridge)

    def record_bridge(self, status: contract.BridgeStatus) -> bool:
        """Log a bridge's change of state once; True when this call logged it."""
        with self.sessions() as session:
            if self._last_bridge_logged(session, status.bridge) == status.state:
                return False  # a heartbeat, or a retained message heard again
        links = ", ".join(f"{gate} {link}" for gate, link in status.controllers.items())
        entry = audit.Entry(
            kind="bridge_status",
            ref=f"bridge:{status.bridge}:{status.state}:{status.sent_ms}",
            at=dt.datetime.fromtimestamp(status.sent_ms / 1000, dt.UTC),
            recorded_at=self.clock(),
            gate=next(iter(status.controllers)) if len(status.controllers) == 1 else "",
            reason=f"bridge_{status.state}",
            detail=f"bridge {status.bridge}: outbox {status.outbox}, controllers {links}"[:500],
        )
        try:
            with self.sessions() as session, session.begin():
                audit.append(session, entry)
        except IntegrityError:
            self._last_bridge[status.bridge] = status.state
            return False  # already logged by another gateway process
        self._last_bridge[status.bridge] = status.state
        if status.state == "offline":
            log.warning("bridge %s is OFFLINE", status.bridge)
        return True
