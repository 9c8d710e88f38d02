"""A flood from one reader is cut down by its token bucket (gateway/rate_limit.py); the other readers go on."""

from __future__ import annotations

import datetime as dt
import secrets

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import select

from gateway import contract, rate_limit
from gateway.broker_setup import GATEWAY_USER
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.decision_worker import DecisionWorker
from gateway.decisions import DecisionService
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client
from gateway.rate_limit import ReaderRateLimit
from tests.factories import badged_holder
from tests.mqtt_helpers import Listener


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_flooding_reader_gets_its_burst_then_its_rate_and_the_others_are_unaffected() -> None:
    clock = Clock()
    limit = ReaderRateLimit(clock, rate=5.0, burst=20)
    flood = [limit.allow("STA-G1-IN") for _ in range(1000)]  # a thousand requests in the same instant
    assert flood.count(True) == 20 and flood[:20] == [True] * 20
    assert all(limit.allow("STA-G2-IN") for _ in range(20))  # another reader at the same moment: all served
    clock.t += 1.0
    assert [limit.allow("STA-G1-IN") for _ in range(10)].count(True) == 5  # one second refills `rate` requests
    clock.t += 60.0
    assert [limit.allow("STA-G1-IN") for _ in range(30)].count(True) == 20  # never more than the burst


def test_a_steady_reader_within_the_rate_is_never_refused() -> None:
    clock = Clock()
    limit = ReaderRateLimit(clock, rate=2.0, burst=3)
    for _ in range(500):
        assert limit.allow("STA-G1-IN")
        clock.t += 0.5


def test_a_clock_stepping_back_does_not_drain_or_fill_the_bucket() -> None:
    clock = Clock()
    limit = ReaderRateLimit(clock, rate=1.0, burst=2)
    assert limit.allow("R") and limit.allow("R") and not limit.allow("R")
    clock.t -= 3600
    assert not limit.allow("R")
    clock.t += 1.0
    assert limit.allow("R")


def test_memory_stays_bounded_under_made_up_reader_names(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(rate_limit, "MAX_TRACKED", 100)
    clock = Clock()
    limit = ReaderRateLimit(clock, rate=1.0, burst=1)
    for i in range(1000):
        assert limit.allow(f"fake-{i}")  # each new name starts with a full bucket
        clock.t += 0.001
    assert len(limit._buckets) <= 100
    # The latest (busy) reader is still remembered: pruning forgot the idle ones, not its empty bucket.
    assert limit.allow("fake-999") is False


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ReaderRateLimit(Clock(), rate=0)
    with pytest.raises(ValueError):
        ReaderRateLimit(Clock(), burst=0)


# --- through the decision service over MQTT ------------------------------------------------------------------

@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_flooding_reader_is_cut_to_its_burst_and_another_reader_is_served(instance, site, broker) -> None:  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    service = DecisionService(
        site=site,
        keyring=lambda: instance.keyring,
        issuer=instance.settings.issuer,
        sessions=sessions,
        clock=lambda: dt.datetime.now(dt.UTC),
    )
    address = BrokerAddress("127.0.0.1", broker.port, GATEWAY_USER, broker.password(GATEWAY_USER))
    worker = DecisionWorker(service, address, client_id=f"gw-{secrets.token_hex(3)}")
    worker.rate_limit = ReaderRateLimit(lambda: 0.0, rate=5.0, burst=20)  # time stands still: no refill at all
    worker.start()
    try:
        badge = badged_holder(instance, site, ["STADIUM-PERIMETER"], dt.datetime.now(dt.UTC))
        flood, calm = "STA-G1-IN", "STA-G2-IN"
        with (
            Listener(broker, flood, [contract.answer_topic(flood)]) as flood_answers,
            Listener(broker, calm, [contract.answer_topic(calm)]) as calm_answers,
        ):
            _ask(broker, flood, badge.token, 60)
            _ask(broker, calm, badge.token, 5)
            assert calm_answers.wait_for(lambda _m: len(calm_answers.messages) >= 5) is not None
            # The flood's 60 requests were published before the calm reader's 5: all have been handled by now.
            assert flood_answers.wait_for(lambda _m: len(flood_answers.messages) >= 20) is not None
            assert len(flood_answers.messages) == 20
    finally:
        worker.stop()
    with sessions() as s:
        readers = list(s.scalars(select(AuditEntry.reader).where(AuditEntry.kind == "decision")))
    assert (readers.count(flood), readers.count(calm)) == (20, 5)  # the dropped requests are not audited


def _ask(broker, reader: str, token: str, count: int) -> None:  # type: ignore[no-untyped-def]
    address = BrokerAddress("127.0.0.1", broker.port, reader, broker.password(reader))
    client = make_client(address, f"flood-{reader}-{secrets.token_hex(3)}")
    connect_and_wait(client, address)
    try:
        for _ in range(count):
            nonce = secrets.token_hex(16)
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = contract.answer_topic(reader)
            props.CorrelationData = nonce.encode()
            payload = contract.DecisionRequest(reader=reader, nonce=nonce, token=token, sent_ms=0).to_json()
            client.publish(contract.request_topic(reader), payload, qos=1, properties=props).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
