"""Gate events from the bridges: each one audited once, then acknowledged so the bridge may forget it.

`GateEventService.record` writes one `gate_event` audit entry (ref `gate:seq`, reason = the event kind) and
runs the optional `on_event` hook in the same transaction (the positions and occupancy of the holders), so
either both are committed or neither is. A repeated event (the bridge sends again until it hears the
acknowledgement) finds its ref and adds nothing, and the hook does not run again.

`GateEventWorker` is the MQTT adapter: events in on the shared subscription, an acknowledgement out on the
gate's ack topic only after the commit. An event that cannot be recorded is not acknowledged; the bridge keeps
it and sends it again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway import audit, contract
from gateway.db.models import AuditEntry
from gateway.mqtt_inbox import InboxWorker
from gateway.mqttlink import BrokerAddress

log = logging.getLogger(__name__)

KIND = "gate_event"
EventHook = Callable[[Session, contract.GateEvent, AuditEntry], None]


def event_ref(gate: str, seq: int) -> str:
    return f"{gate}:{seq}"


@dataclass(frozen=True)
class Recorded:
    """What recording one event did."""

    audit_seq: int  # the audit entry that holds the event
    duplicate: bool  # True when it was already there: nothing was written, the hook did not run


@dataclass
class GateEventService:
    sessions: sessionmaker[Session]
    clock: Callable[[], dt.datetime]
    on_event: EventHook | None = None

    def record(self, event: contract.GateEvent) -> Recorded:
        """Audit `event` and run the hook, in one transaction; idempotent by gate:seq. Raises SQLAlchemyError."""
        ref = event_ref(event.gate, event.seq)
        try:
            with self.sessions() as session, session.begin():
                earlier = self._earlier(session, ref)
                if earlier is not None:
                    return self._repeat(event, earlier)
                row = audit.append(session, self._entry(session, event, ref))
                if self.on_event is not None:
                    self.on_event(session, event, row)
                recorded = Recorded(row.seq, False)
        except IntegrityError:
            # Another worker recorded the same event between our look and our write.
            with self.sessions() as session:
                earlier = self._earlier(session, ref)
            if earlier is None:
                raise
            return self._repeat(event, earlier)
        log.info("gate event %s %s recorded as audit entry %d", ref, event.kind, recorded.audit_seq)
        return recorded

    @staticmethod
    def _earlier(session: Session, ref: str) -> AuditEntry | None:
        return session.scalar(select(AuditEntry).where(AuditEntry.ref == ref))

    @staticmethod
    def _repeat(event: contract.GateEvent, earlier: AuditEntry) -> Recorded:
        if earlier.kind != KIND or earlier.reason != event.kind:
            log.warning(
                "gate event %s:%d (%s) repeats a ref already used by %s %s; kept the first",
                event.gate,
                event.seq,
                event.kind,
                earlier.kind,
                earlier.reason,
            )
        return Recorded(earlier.seq, True)

    def _entry(self, session: Session, event: contract.GateEvent, ref: str) -> audit.Entry:
        detail: dict[str, Any] = {"seq": event.seq, "at_ms": event.at_ms, "nonce": event.nonce}
        reader = badge_id = holder_id = ""
        if event.nonce:
            # The decision the passage (or unused grant) belongs to says who it was, if it was at this gate.
            decision = session.scalar(
                select(AuditEntry).where(AuditEntry.ref == event.nonce, AuditEntry.kind == "decision")
            )
            if decision is None:
                detail["decision"] = "not found"
            elif decision.gate != event.gate:
                detail["decision"] = f"made for gate {decision.gate}"
                log.warning("gate event %s names decision %s of gate %s", ref, event.nonce, decision.gate)
            else:
                reader, badge_id, holder_id = decision.reader, decision.badge_id, decision.holder_id
                detail["decision_seq"] = decision.seq
        return audit.Entry(
            kind=KIND,
            ref=ref,
            at=dt.datetime.fromtimestamp(event.at_ms / 1000, dt.UTC),
            recorded_at=self.clock(),
            reader=reader,
            gate=event.gate,
            badge_id=badge_id,
            holder_id=holder_id,
            reason=event.kind,
            detail=json.dumps(detail, sort_keys=True, separators=(",", ":")),
        )


class GateEventWorker(InboxWorker):
    """Gate events in on the gateway's shared subscription; acknowledgements out after they are committed."""

    def __init__(self, service: GateEventService, address: BrokerAddress, client_id: str = "gateway-events-1") -> None:
        super().__init__(
            address,
            client_id,
            contract.EVENT_SUBSCRIPTION,
            name="gate-events",
            max_batch=1,
            if_full="the bridge will send it again",
        )
        self.service = service
        self.recorded = 0

    def handle(self, batch: list[mqtt.MQTTMessage]) -> None:
        for msg in batch:
            self._handle(msg)

    def _handle(self, msg: mqtt.MQTTMessage) -> None:
        try:
            gate = contract.gate_from_event_topic(msg.topic)
            event = contract.GateEvent.from_json(bytes(msg.payload))
        except contract.ContractError as exc:
            log.warning("ignored gate event on %s: %s", msg.topic, exc)
            return
        if event.gate != gate:
            # The broker lets a bridge publish only on its own gate's topic: the topic is the proof of origin.
            log.warning("ignored gate event on %s naming gate %s", msg.topic, event.gate)
            return
        try:
            self.service.record(event)
        except SQLAlchemyError as exc:
            log.error("gate event %s:%d not recorded (the bridge will send it again): %s", gate, event.seq, exc)
            return
        self.recorded += 1
        ack = contract.GateEventAck(gate=gate, seq=event.seq)
        self.client.publish(contract.gate_ack_topic(gate), ack.to_json(), qos=1)
