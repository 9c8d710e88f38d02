"""Overload: requests that waited in the gateway longer than readers wait for an answer are shed, not decided."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import func, select

from gateway import contract
from gateway.broker_setup import GATEWAY_USER
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.decision_worker import MAX_BATCH, STALE_AFTER_S, DecisionWorker
from gateway.decisions import DecisionService
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client
from gateway.rate_limit import ReaderRateLimit
from gateway.site import Site
from tests.factories import badged_holder, decision_service


def _request(reader: str, token: str, received: float) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=contract.request_topic(reader).encode())
    msg.payload = contract.DecisionRequest(reader, secrets.token_hex(16), token, 0).to_json()
    msg.timestamp = received  # paho stamps each message with time.monotonic() when it arrives
    return msg


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_requests_older_than_the_readers_patience_are_shed_and_the_fresh_ones_decided(instance, site: Site) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    token = badged_holder(instance, site, ["STADIUM-PERIMETER"], now).token
    worker = DecisionWorker(
        decision_service(instance, site, lambda: now), BrokerAddress("127.0.0.1", 1, "gateway", "unused")
    )
    arrived = time.monotonic()
    batch = [
        _request("STA-G1-IN", token, arrived - STALE_AFTER_S - 1),  # its reader gave up long ago
        _request("STA-G2-IN", token, arrived),
        _request("STA-G3-IN", token, arrived - STALE_AFTER_S / 2),
    ]
    worker.handle(batch)
    assert (worker.shed, worker.handled) == (1, 2)
    with session_factory(make_engine(instance.settings.database_url))() as s:
        readers = set(s.scalars(select(AuditEntry.reader).where(AuditEntry.kind == "decision")))
        assert readers == {"STA-G2-IN", "STA-G3-IN"}
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.kind == "decision")) == 2


class _StuckOnce:
    """A decision service whose first batch takes `seconds` (a database stall); later batches are quick."""

    def __init__(self, service: DecisionService, seconds: float) -> None:
        self.service, self.seconds, self.stalled = service, seconds, threading.Event()

    def answer_many(self, requests: list[contract.DecisionRequest]) -> list[contract.DecisionAnswer]:
        if not self.stalled.is_set():
            self.stalled.set()
            time.sleep(self.seconds)
        return self.service.answer_many(requests)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_stalled_worker_is_not_buried_under_requests_its_readers_gave_up_on(instance, site: Site, broker) -> None:  # type: ignore[no-untyped-def]
    # Requests carry a 1 s expiry and the worker reads ahead at most MAX_BATCH unacknowledged requests, so what
    # queues up while it is stuck for 3 s is dropped by the broker instead of being decided seconds late.
    now = dt.datetime.now(dt.UTC)
    token = badged_holder(instance, site, ["STADIUM-PERIMETER"], now).token
    service = decision_service(instance, site, lambda: dt.datetime.now(dt.UTC))
    address = BrokerAddress("127.0.0.1", broker.port, GATEWAY_USER, broker.password(GATEWAY_USER))
    worker = DecisionWorker(
        _StuckOnce(service, 3.0),  # type: ignore[arg-type]
        address,
        client_id=f"gw-{secrets.token_hex(3)}",
        rate_limit=ReaderRateLimit(time.monotonic, rate=100_000, burst=100_000),
    )
    worker.start()
    reader = BrokerAddress("127.0.0.1", broker.port, "STA-G1-IN", broker.password("STA-G1-IN"))
    client = make_client(reader, f"stuck-{secrets.token_hex(3)}")
    connect_and_wait(client, reader)
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.MessageExpiryInterval = contract.REQUEST_EXPIRY_S
    try:

        def ask() -> None:
            body = contract.DecisionRequest("STA-G1-IN", secrets.token_hex(16), token, 0).to_json()
            client.publish(contract.request_topic("STA-G1-IN"), body, qos=1, properties=props).wait_for_publish(5)

        ask()
        assert worker.service.stalled.wait(5)  # type: ignore[attr-defined]
        for _ in range(400):  # while the worker is stuck
            ask()
        time.sleep(3.0 + 2.0)  # the stall, then time to decide whatever reached the worker
        decided = _decisions(instance)
        assert 1 <= decided <= 1 + MAX_BATCH, decided
        ask()  # and the worker is back to normal
        deadline = time.monotonic() + 5
        while _decisions(instance) == decided and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _decisions(instance) == decided + 1
    finally:
        client.disconnect()
        client.loop_stop()
        worker.stop()


def _decisions(instance) -> int:  # type: ignore[no-untyped-def]
    with session_factory(make_engine(instance.settings.database_url))() as s:
        return s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.kind == "decision")) or 0
