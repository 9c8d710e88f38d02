"""Decisions readers took offline, uploaded when the link returns: each audited once, then acknowledged.

`OfflineUploadService.record` writes one `decision` audit entry with mode "offline", `at` = when the reader
decided, `recorded_at` = when the gateway received it, idempotent by nonce with the same rule as online
decisions (the audit ref is the nonce: a repeated upload finds it and adds nothing). If the bridge's passage
for that grant reached the audit first (bridge outbox and reader queue drain independently), the holder is
moved now, in the same transaction, as the passage would have done had the grant been on record.

`OfflineUploadWorker` is the MQTT adapter: uploads in on the shared subscription, an acknowledgement out on the
reader's ack topic only after the commit. The topic is the proof of origin: the ACL lets each reader write only
its own upload topic.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway import audit, contract, positions
from gateway.db.models import AuditEntry, Position
from gateway.mqtt_inbox import InboxWorker
from gateway.mqttlink import BrokerAddress
from gateway.site import Site

log = logging.getLogger(__name__)

MODE = "offline"
# A passage for an offline grant happens within the gate's passage time of the decision; allow for clocks.
_PASSAGE_WINDOW = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Recorded:
    audit_seq: int
    duplicate: bool  # already in the audit: nothing written


class UploadRefused(ValueError):
    """An upload that must not be audited as this reader's decision (and is not acknowledged)."""


@dataclass
class OfflineUploadService:
    site: Site
    sessions: sessionmaker[Session]
    clock: Callable[[], dt.datetime]

    def record(self, upload: contract.OfflineDecision) -> Recorded:
        """Audit one offline decision (idempotent by nonce). Raises UploadRefused, SQLAlchemyError."""
        reader = self.site.readers.get(upload.reader)
        if reader is None:
            raise UploadRefused(f"reader {upload.reader!r} is not in the site configuration")
        if upload.gate != reader.gate:
            raise UploadRefused(f"reader {upload.reader} is at gate {reader.gate}, not {upload.gate}")
        received = self.clock()
        try:
            with self.sessions() as session, session.begin():
                earlier = self._earlier(session, upload.nonce)
                if earlier is not None:
                    return self._repeat(upload, earlier)
                row = audit.append(session, self._entry(upload, received))
                if upload.allow and upload.holder:
                    self._passage_already_seen(session, upload, row)
                recorded = Recorded(row.seq, False)
        except IntegrityError:
            with self.sessions() as session:  # another worker recorded it between our look and our write
                earlier = self._earlier(session, upload.nonce)
            if earlier is None:
                raise
            return self._repeat(upload, earlier)
        log.info(
            "offline decision reader=%s nonce=%s allow=%s reason=%s audited as entry %d",
            upload.reader,
            upload.nonce,
            upload.allow,
            upload.reason,
            recorded.audit_seq,
        )
        return recorded

    @staticmethod
    def _earlier(session: Session, nonce: str) -> AuditEntry | None:
        return session.scalar(select(AuditEntry).where(AuditEntry.ref == nonce))

    @staticmethod
    def _repeat(upload: contract.OfflineDecision, earlier: AuditEntry) -> Recorded:
        if earlier.kind != "decision" or earlier.reader != upload.reader:
            # A nonce is its decider's: a clash is logged and the first record kept.
            log.warning(
                "offline decision %s from %s repeats a ref of %s %s; kept the first",
                upload.nonce,
                upload.reader,
                earlier.kind,
                earlier.reader,
            )
        return Recorded(earlier.seq, True)

    @staticmethod
    def _entry(upload: contract.OfflineDecision, received: dt.datetime) -> audit.Entry:
        return audit.Entry(
            kind="decision",
            ref=upload.nonce,
            at=dt.datetime.fromtimestamp(upload.decided_ms / 1000, dt.UTC),
            recorded_at=received,
            reader=upload.reader,
            gate=upload.gate,
            badge_id=upload.badge,
            holder_id=upload.holder,
            allow=upload.allow,
            reason=upload.reason,
            mode=MODE,
            detail=upload.detail,
            expires_ms=upload.decided_ms + contract.ANSWER_TTL_MS,
        )

    def _passage_already_seen(self, session: Session, upload: contract.OfflineDecision, row: AuditEntry) -> None:
        """The bridge's passage for this grant may be in the audit already, recorded when nobody knew the grant."""
        passages = session.scalars(
            select(AuditEntry).where(
                AuditEntry.gate == upload.gate,
                AuditEntry.at >= row.at,
                AuditEntry.at <= row.at + _PASSAGE_WINDOW,
                AuditEntry.kind == "gate_event",
                AuditEntry.reason == "passage",
            )
        )
        for passage in passages:
            try:
                nonce = json.loads(passage.detail).get("nonce")
            except (ValueError, AttributeError):
                continue
            if nonce != upload.nonce:
                continue
            zone = self.site.target_zone(self.site.readers[upload.reader])
            position = session.get(Position, upload.holder)
            if position is not None and audit.to_ms(position.since) > audit.to_ms(passage.at):
                return  # a later passage already placed the holder
            positions.move(session, upload.holder, zone, upload.gate, passage.at)
            log.info("offline grant %s: passage of entry %d moves holder %s", upload.nonce, passage.seq, upload.holder)
            return


class OfflineUploadWorker(InboxWorker):
    """Offline decisions in on the gateway's shared subscription; acknowledgements out after the commit."""

    def __init__(
        self, service: OfflineUploadService, address: BrokerAddress, client_id: str = "gateway-offline-1"
    ) -> None:
        super().__init__(
            address,
            client_id,
            contract.OFFLINE_UPLOAD_SUBSCRIPTION,
            name="offline-uploads",
            max_batch=1,
            if_full="the reader will upload it again",
        )
        self.service = service
        self.recorded = 0

    def handle(self, batch: list[mqtt.MQTTMessage]) -> None:
        for msg in batch:
            self._handle(msg)

    def _handle(self, msg: mqtt.MQTTMessage) -> None:
        try:
            reader = contract.reader_from_offline_topic(msg.topic)
            upload = contract.OfflineDecision.from_json(bytes(msg.payload))
        except contract.ContractError as exc:
            log.warning("ignored offline upload on %s: %s", msg.topic, exc)
            return
        if upload.reader != reader:
            log.warning("ignored offline upload on %s naming reader %s", msg.topic, upload.reader)
            return
        try:
            self.service.record(upload)
        except UploadRefused as exc:
            log.warning("refused offline upload %s from %s: %s", upload.nonce, reader, exc)
            return
        except SQLAlchemyError as exc:
            log.error("offline decision %s not recorded (the reader will upload it again): %s", upload.nonce, exc)
            return
        self.recorded += 1
        ack = contract.OfflineDecisionAck(reader=reader, nonce=upload.nonce)
        self.client.publish(contract.offline_ack_topic(reader), ack.to_json(), qos=1)
