"""Retained, signed site messages for readers, on the suite's real Mosquitto."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections.abc import Iterator

import pytest

from gateway import badges, contract
from gateway.broker_setup import GATEWAY_USER
from gateway.db.engine import make_engine, session_factory
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client
from gateway.site import parse_site
from gateway.site_publisher import SitePublisher
from gateway.threat import set_threat_level
from tests.conftest import SITE_FILE
from tests.mqtt_helpers import Listener

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def publishing(instance, site, broker) -> Iterator[tuple]:  # type: ignore[no-untyped-def, type-arg]
    sessions = session_factory(make_engine(instance.settings.database_url))
    address = BrokerAddress("127.0.0.1", broker.port, GATEWAY_USER, broker.password(GATEWAY_USER))
    publisher = SitePublisher(
        address,
        f"pub-{secrets.token_hex(3)}",
        site,
        SITE_FILE.read_text(),
        lambda: instance.keyring,
        instance.settings.issuer,
        sessions,
        lambda: int(time.time() * 1000),
        interval_s=0.2,
    )
    publisher.start()
    yield publisher, sessions
    publisher.stop()


def decision_keys(instance) -> dict:  # type: ignore[no-untyped-def]
    pub = instance.keyring.decision_signing.public_key()
    return {contract.key_id(pub): pub}


def genuine(instance, msg) -> contract.SiteMessage:  # type: ignore[no-untyped-def]
    message = contract.SiteMessage.from_json(msg.payload)
    assert contract.site_message_problem(message, decision_keys(instance)) is None
    return message


def test_readers_get_every_site_message_retained_and_signed(publishing, instance, broker) -> None:  # type: ignore[no-untyped-def]
    with Listener(broker, "STA-G1-IN", ["acs/v1/site/#"]) as reader:
        for kind, topic in contract.SITE_TOPICS.items():
            msg = reader.wait_for(lambda m, t=topic: m.topic == t)
            assert msg is not None and msg.retain, f"no retained {kind} message"
        by_topic = {m.topic: genuine(instance, m) for m in reader.messages}
    keys = contract.badge_keys_from(by_topic[contract.SITE_TOPICS["keys"]])
    assert set(keys) == set(instance.keyring.badge_public)
    config = by_topic[contract.SITE_TOPICS["config"]].body
    assert set(parse_site(config["zones_yaml"]).readers) >= {"STA-G1-IN", "CDG-G2-OUT"}
    assert by_topic[contract.SITE_TOPICS["threat_level"]].body == {"level": "vigilance"}


def test_a_revocation_reaches_online_readers(publishing, instance, site, broker) -> None:  # type: ignore[no-untyped-def]
    _, sessions = publishing
    now = _now()
    with sessions() as s, s.begin():
        org = badges.get_or_create_organisation(s, "GIGN", "GIGN", "gendarmerie", "FR")
        holder = badges.register_holder(s, site, org, "Petit", "Louis", "gendarme", "FR", now)
        badge = badges.issue_badge(
            s,
            site,
            instance.keyring,
            instance.settings.issuer,
            holder,
            ["STADIUM-PERIMETER"],
            now,
            now + dt.timedelta(days=1),
            now,
        )
    topic = contract.SITE_TOPICS["revocations"]
    with Listener(broker, "STA-G2-IN", [topic]) as reader:
        assert reader.wait_for(lambda m: m.topic == topic) is not None
        started = time.monotonic()
        with sessions() as s, s.begin():
            badges.revoke_badge(s, badge.id, "lost", _now())
        msg = reader.wait_for(lambda m: badge.id in json.loads(m.payload)["body"]["badges"], timeout=10)
        assert msg is not None, "the revocation was not published"
        print(f"revocation reached the reader after {(time.monotonic() - started) * 1000:.0f} ms")
        message = genuine(instance, msg)
        assert message.version >= 1


def test_a_threat_level_switch_is_published(publishing, instance, site, broker) -> None:  # type: ignore[no-untyped-def]
    _, sessions = publishing
    topic = contract.SITE_TOPICS["threat_level"]
    with Listener(broker, "GDN-G1-IN", [topic]) as reader:
        with sessions() as s, s.begin():
            set_threat_level(s, site, "emergency", "lead", _now())
        msg = reader.wait_for(lambda m: json.loads(m.payload)["body"]["level"] == "emergency")
        assert msg is not None
        assert genuine(instance, msg).body == {"level": "emergency"}


def test_a_reader_cannot_publish_site_messages(publishing, instance, broker) -> None:  # type: ignore[no-untyped-def]
    topic = contract.SITE_TOPICS["threat_level"]
    rogue_address = BrokerAddress("127.0.0.1", broker.port, "CDG-G1-IN", broker.password("CDG-G1-IN"))
    rogue = make_client(rogue_address, "rogue-reader")
    connect_and_wait(rogue, rogue_address)
    forged = contract.SiteMessage("threat_level", 10**9, 0, {"level": "vigilance"}, "x", "A" * 86)
    rogue.publish(topic, forged.to_json(), qos=1, retain=True).wait_for_publish(5)
    rogue.disconnect()
    rogue.loop_stop()
    with Listener(broker, "CDG-G2-IN", [topic]) as reader:
        msg = reader.wait_for(lambda m: m.topic == topic)
        assert msg is not None
        assert contract.SiteMessage.from_json(msg.payload).version != 10**9  # the broker kept the gateway's
        genuine(instance, msg)


def test_a_forged_site_message_fails_verification(instance) -> None:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    forged = contract.sign_site_message(
        contract.SiteMessage("revocations", 99, 0, {"badges": []}, ""), Ed25519PrivateKey.generate()
    )
    assert contract.site_message_problem(forged, decision_keys(instance)) is not None
    genuine_one = contract.sign_site_message(
        contract.SiteMessage("revocations", 99, 0, {"badges": []}, ""), instance.keyring.decision_signing
    )
    tampered = contract.SiteMessage(**{**genuine_one.__dict__, "body": {"badges": ["x"]}})
    assert contract.site_message_problem(tampered, decision_keys(instance)) == "bad signature"


def test_a_suspension_is_published_for_offline_readers(publishing, instance, site, broker) -> None:  # type: ignore[no-untyped-def]
    from gateway import holders
    from gateway.badges import command_line_actor

    _, sessions = publishing
    now = _now()
    with sessions() as s, s.begin():
        org = badges.get_or_create_organisation(s, "GIGN", "GIGN", "gendarmerie", "FR")
        holder = badges.register_holder(s, site, org, "Marchand", "Theo", "gendarme", "FR", now)
    topic = contract.SITE_TOPICS["revocations"]
    with Listener(broker, "STA-G3-IN", [topic]) as reader:
        first = reader.wait_for(lambda m: m.topic == topic)
        assert first is not None
        with sessions() as s, s.begin():
            holders.suspend(s, s.get(type(holder), holder.id), "under investigation", _now(), command_line_actor())
        msg = reader.wait_for(lambda m: holder.id in json.loads(m.payload)["body"]["holders"])
        assert msg is not None, "the suspension was not published"
        assert genuine(instance, msg).version > genuine(instance, first).version
