"""Audits readers going offline and coming back, from their retained status messages and last wills.

Every gateway process hears every status (a plain subscription), so each change is keyed by a `ref` built from
the reader, the state and the reader's own timestamp: the first process to log it wins, the others and any
retained redelivery after a restart add nothing.
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

from gateway import audit, contract
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
            address, client_id, [(contract.READER_STATUS_SUBSCRIPTION, 1)], on_message=self._on_message
        )
        self._last: dict[str, str] = {}  # reader -> last state logged (heartbeats repeat "online")

    def start(self) -> None:
        connect_and_wait(self.client, self.address)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            reader = contract.reader_from_status_topic(msg.topic)
            status = contract.ReaderStatus.from_json(bytes(msg.payload))
        except contract.ContractError as exc:
            log.warning("ignored status on %s: %s", msg.topic, exc)
            return
        if status.reader != reader:
            log.warning("ignored status on %s naming reader %s", msg.topic, status.reader)
            return
        try:
            self.record(status)
        except Exception:  # the database may be away; the retained status is delivered again on reconnect
            log.exception("status of reader %s not logged", reader)

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
            f"offline queue {status.offline_queue}",
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
