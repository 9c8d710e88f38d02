"""Overload: requests that waited in the gateway longer than readers wait for an answer are shed, not decided."""

from __future__ import annotations

import datetime as dt
import secrets
import time

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select

from gateway import contract
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.decision_worker import STALE_AFTER_S, DecisionWorker
from gateway.mqttlink import BrokerAddress
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
