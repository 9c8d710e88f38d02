"""Gate events on the gateway side: one audit entry per event, idempotent by gate:seq, the hook in the same
transaction, and the MQTT worker acknowledging only what is committed. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway import audit, contract
from gateway.audit_verify import verify_database
from gateway.broker_setup import GATEWAY_USER, BrokerFiles, bridge_user
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.gate_events import GateEventService, GateEventWorker, event_ref
from gateway.mqttlink import BrokerAddress
from tests.mqtt_helpers import Listener

NOW = dt.datetime(2026, 7, 26, 19, 30, tzinfo=dt.UTC)
AT_MS = int(NOW.timestamp() * 1000) - 250
GATE = "STA-G1"
WAIT_S = 10.0


@pytest.fixture
def sessions(database_url: str) -> sessionmaker[Session]:
    return session_factory(make_engine(database_url))


def _service(sessions: sessionmaker[Session], **kw: object) -> GateEventService:
    return GateEventService(sessions=sessions, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def _event(kind: str = "door_forced", seq: int = 1, nonce: str = "", gate: str = GATE) -> contract.GateEvent:
    return contract.GateEvent(gate=gate, kind=kind, seq=seq, at_ms=AT_MS, nonce=nonce)


def _rows(sessions: sessionmaker[Session]) -> list[AuditEntry]:
    with sessions() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.kind == "gate_event").order_by(AuditEntry.seq)))


def _decision(sessions: sessionmaker[Session], gate: str = GATE) -> str:
    nonce = secrets.token_hex(16)
    with sessions() as s, s.begin():
        audit.append(
            s,
            audit.Entry(
                kind="decision",
                ref=nonce,
                at=NOW,
                recorded_at=NOW,
                reader=f"{gate}-IN",
                gate=gate,
                badge_id="badge-1",
                holder_id="holder-1",
                allow=True,
                reason="granted",
                mode="online",
            ),
        )
    return nonce


def test_an_event_becomes_one_audit_entry(sessions: sessionmaker[Session]) -> None:
    recorded = _service(sessions).record(_event("tamper", seq=41))

    [row] = _rows(sessions)
    assert not recorded.duplicate and recorded.audit_seq == row.seq
    assert (row.kind, row.ref, row.gate, row.reason) == ("gate_event", f"{GATE}:41", GATE, "tamper")
    assert row.at == audit.to_ms(dt.datetime.fromtimestamp(AT_MS / 1000, dt.UTC))
    assert row.recorded_at == NOW
    assert json.loads(row.detail) == {"seq": 41, "at_ms": AT_MS, "nonce": ""}
    with sessions() as s:
        assert verify_database(s, [], {}).ok  # part of the one chain


def test_a_repeated_event_adds_nothing_and_the_hook_runs_once(sessions: sessionmaker[Session]) -> None:
    calls: list[tuple[str, int]] = []
    service = _service(sessions, on_event=lambda _s, event, row: calls.append((event.kind, row.seq)))
    first = service.record(_event(seq=7))
    again = service.record(_event(seq=7))

    assert again.duplicate and again.audit_seq == first.audit_seq
    assert len(_rows(sessions)) == 1
    assert calls == [("door_forced", first.audit_seq)]
    service.record(_event(seq=8))
    assert [r.ref for r in _rows(sessions)] == [event_ref(GATE, 7), event_ref(GATE, 8)]


def test_the_hook_runs_inside_the_transaction(sessions: sessionmaker[Session]) -> None:
    def hook(session: Session, _event: contract.GateEvent, row: AuditEntry) -> None:
        # It sees its own entry, uncommitted, in the same session...
        assert session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.seq == row.seq)) == 1
        raise RuntimeError("the occupancy update failed")

    with pytest.raises(RuntimeError):
        _service(sessions, on_event=hook).record(_event())
    assert _rows(sessions) == []  # ...and its failure takes the entry with it: the bridge will send again


def test_a_passage_names_who_passed_from_its_decision(sessions: sessionmaker[Session]) -> None:
    nonce = _decision(sessions)
    _service(sessions).record(_event("passage", seq=3, nonce=nonce))

    [row] = _rows(sessions)
    assert (row.reason, row.reader, row.badge_id, row.holder_id) == ("passage", "STA-G1-IN", "badge-1", "holder-1")
    detail = json.loads(row.detail)
    assert detail["nonce"] == nonce and "decision_seq" in detail


def test_a_grant_unused_carries_its_nonce(sessions: sessionmaker[Session]) -> None:
    nonce = _decision(sessions)
    _service(sessions).record(_event("grant_unused", seq=4, nonce=nonce))
    [row] = _rows(sessions)
    assert row.reason == "grant_unused" and json.loads(row.detail)["nonce"] == nonce
    assert row.holder_id == "holder-1"


def test_a_nonce_of_another_gate_names_nobody(sessions: sessionmaker[Session]) -> None:
    nonce = _decision(sessions, gate="STA-G2")
    _service(sessions).record(_event("passage", seq=5, nonce=nonce))
    [row] = _rows(sessions)
    assert (row.badge_id, row.holder_id) == ("", "")
    assert json.loads(row.detail)["decision"] == "made for gate STA-G2"


# --- the MQTT worker -----------------------------------------------------------------------------------


@pytest.fixture
def worker(broker: BrokerFiles, tmp_path: object) -> Iterator[tuple[GateEventWorker, sessionmaker[Session]]]:
    from gateway.db.engine import upgrade

    url = f"sqlite:///{tmp_path}/events.db"
    upgrade(url)
    sessions = session_factory(make_engine(url))
    address = BrokerAddress("127.0.0.1", broker.port, GATEWAY_USER, broker.password(GATEWAY_USER))
    w = GateEventWorker(_service(sessions), address, client_id=f"events-{secrets.token_hex(3)}")
    w.start()
    yield w, sessions
    w.stop()


def _bridge_client(broker: BrokerFiles, gate: str = GATE) -> Listener:
    return Listener(broker, bridge_user(gate), [contract.gate_ack_topic(gate)])


def _publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    info = client.publish(topic, payload, qos=1)
    info.wait_for_publish(WAIT_S)


def test_the_worker_acknowledges_an_event_once_it_is_audited(
    broker: BrokerFiles, worker: tuple[GateEventWorker, sessionmaker[Session]]
) -> None:
    _, sessions = worker
    with _bridge_client(broker) as bridge:
        event = _event("door_held_open", seq=900)
        _publish(bridge.client, contract.gate_event_topic(GATE), event.to_json())
        ack = bridge.wait_for(lambda m: contract.GateEventAck.from_json(m.payload).seq == 900, WAIT_S)
        assert ack is not None
        assert [r.ref for r in _rows(sessions)] == [f"{GATE}:900"]  # committed before the acknowledgement

        _publish(bridge.client, contract.gate_event_topic(GATE), event.to_json())  # sent again: ack lost
        assert bridge.wait_for(lambda m: bridge.messages.index(m) == 1, WAIT_S) is not None  # acknowledged again
        assert len(_rows(sessions)) == 1


def test_the_worker_ignores_an_event_that_names_another_gate(
    broker: BrokerFiles, worker: tuple[GateEventWorker, sessionmaker[Session]]
) -> None:
    w, sessions = worker
    with _bridge_client(broker) as bridge:
        _publish(bridge.client, contract.gate_event_topic(GATE), _event(gate="STA-G2", seq=5).to_json())
        _publish(bridge.client, contract.gate_event_topic(GATE), b'{"v":1,"gate":"STA-G1"}')
        _publish(bridge.client, contract.gate_event_topic(GATE), _event(seq=6).to_json())  # in order: a barrier
        assert bridge.wait_for(lambda m: contract.GateEventAck.from_json(m.payload).seq == 6, WAIT_S) is not None
        assert [contract.GateEventAck.from_json(m.payload).seq for m in bridge.messages] == [6]
    assert [r.ref for r in _rows(sessions)] == [f"{GATE}:6"]
    assert w.recorded == 1
