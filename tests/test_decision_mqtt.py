"""The decision service over a real Mosquitto: MQTT v5 request/response, as docs/protocol.md describes it."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import badges, contract
from gateway.broker_setup import GATEWAY_USER
from gateway.db.engine import make_engine, session_factory
from gateway.decision_worker import DecisionWorker
from gateway.decisions import DecisionService
from gateway.mqttlink import BrokerAddress
from readers.gateway_link import GatewayLink


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def running(instance, site, broker) -> Iterator[tuple]:  # type: ignore[no-untyped-def, type-arg]
    sessions = session_factory(make_engine(instance.settings.database_url))
    service = DecisionService(
        site=site,
        keyring=lambda: instance.keyring,
        issuer=instance.settings.issuer,
        sessions=sessions,
        clock=_now,
    )
    address = BrokerAddress("127.0.0.1", broker.port, GATEWAY_USER, broker.password(GATEWAY_USER))
    worker = DecisionWorker(service, address, client_id=f"gw-{secrets.token_hex(3)}")
    worker.start()
    now = _now()
    with sessions() as s, s.begin():
        org = badges.get_or_create_organisation(s, "SEC-1", "Private security one", "private_security", "FR")
        holder = badges.register_holder(s, site, org, "Durand", "Sami", "private_guard", "FR", now)
        badge = badges.issue_badge(
            s,
            site,
            instance.keyring,
            instance.settings.issuer,
            holder,
            ["STADIUM-PERIMETER"],
            now - dt.timedelta(minutes=5),
            now + dt.timedelta(days=1),
            now,
        )
    yield worker, badge, instance
    worker.stop()


def _decision_keys(instance) -> dict:  # type: ignore[no-untyped-def]
    pub = instance.keyring.decision_signing.public_key()
    return {contract.key_id(pub): pub}


def test_reader_link_gets_a_genuine_signed_answer(running, broker) -> None:  # type: ignore[no-untyped-def]
    _, badge, instance = running
    address = BrokerAddress("127.0.0.1", broker.port, "STA-G1-IN", broker.password("STA-G1-IN"))
    link = GatewayLink(address, "STA-G1-IN", "STA-G1", _decision_keys(instance), lambda: int(time.time() * 1000))
    link.start()
    try:
        answer = link.ask(badge.token, timeout_s=5)
        assert answer is not None
        assert (answer.allow, answer.reason, answer.badge, answer.gate) == (
            True,
            "granted",
            badge.id,
            "STA-G1",
        )
        assert link.rejected == 0
    finally:
        link.stop()


def test_reader_link_drops_answers_not_signed_by_the_gateway(running, broker) -> None:  # type: ignore[no-untyped-def]
    _, badge, _ = running
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    # The reader pins a key the gateway does not have: every real answer must be refused.
    other = Ed25519PrivateKey.generate().public_key()
    address = BrokerAddress("127.0.0.1", broker.port, "STA-G1-OUT", broker.password("STA-G1-OUT"))
    link = GatewayLink(
        address, "STA-G1-OUT", "STA-G1", {contract.key_id(other): other}, lambda: int(time.time() * 1000)
    )
    link.start()
    try:
        assert link.ask(badge.token, timeout_s=2) is None
        assert link.rejected == 1
    finally:
        link.stop()


def test_mosquitto_clients_alone_can_ask_for_a_decision(running, broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The recipe at the end of docs/protocol.md, run as written."""
    _, badge, instance = running
    reader, password = "STA-G2-IN", broker.password("STA-G2-IN")
    base = ["-V", "5", "-h", "127.0.0.1", "-p", str(broker.port), "-u", reader, "-P", password]
    answer_topic = f"acs/v1/readers/{reader}/answer"
    sub = subprocess.Popen(
        ["mosquitto_sub", *base, "-t", answer_topic, "-C", "1", "-W", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # let the subscription reach the broker
    nonce = secrets.token_hex(16)
    request = json.dumps(
        {"v": 1, "reader": reader, "nonce": nonce, "token": badge.token, "sent_ms": int(time.time() * 1000)}
    )
    subprocess.run(
        [
            "mosquitto_pub",
            *base,
            "-q",
            "1",
            "-t",
            f"acs/v1/readers/{reader}/request",
            "-D",
            "publish",
            "response-topic",
            answer_topic,
            "-D",
            "publish",
            "correlation-data",
            nonce,
            "-m",
            request,
        ],
        check=True,
        timeout=10,
    )
    out, err = sub.communicate(timeout=15)
    assert sub.returncode == 0, err
    answer = contract.DecisionAnswer.from_json(out.strip().encode())
    assert (answer.reader, answer.nonce, answer.reason, answer.allow) == (
        reader,
        nonce,
        "zone_not_permitted",
        False,
    )
    assert (
        contract.answer_problem(answer, _decision_keys(instance), reader=reader, nonce=nonce, now_ms=answer.decided_ms)
        is None
    )


def test_request_with_a_foreign_response_topic_is_not_answered(running, broker) -> None:  # type: ignore[no-untyped-def]
    worker, badge, _ = running
    reader, password = "STA-G3-IN", broker.password("STA-G3-IN")
    before = worker.handled
    nonce = secrets.token_hex(16)
    request = json.dumps({"v": 1, "reader": reader, "nonce": nonce, "token": badge.token, "sent_ms": 1})
    subprocess.run(
        [
            "mosquitto_pub",
            "-V",
            "5",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-u",
            reader,
            "-P",
            password,
            "-q",
            "1",
            "-t",
            f"acs/v1/readers/{reader}/request",
            "-D",
            "publish",
            "response-topic",
            "acs/v1/readers/STA-G1-IN/answer",
            "-m",
            request,
        ],
        check=True,
        timeout=10,
    )
    # A well-formed request for the same reader afterwards is answered: the worker went on, the bad one was dropped.
    address = BrokerAddress("127.0.0.1", broker.port, reader, password)
    link = GatewayLink(address, reader, "STA-G3", {}, lambda: 0)
    link.start()
    try:
        link.ask(badge.token, timeout_s=3)
    finally:
        link.stop()
    assert worker.handled == before + 1


def test_reader_denies_as_gateway_unreachable_when_no_gateway_answers(broker) -> None:  # type: ignore[no-untyped-def]
    """No decision worker is running: the reader waits its timeout and denies, with nothing sent to the bridge."""
    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway import tokens
    from readers.agent import ReaderAgent
    from readers.decoding import Decoder, to_gray
    from readers.scenes import render_badge_frame

    token = tokens.issue_token(
        Ed25519PrivateKey.generate(),
        issuer="PAR24",
        badge_id="abcdEFGH1234",
        holder_id="hldr5678",
        zones=["STADIUM-PERIMETER"],
        not_before=0,
        expires=2**31,
    )
    address = BrokerAddress("127.0.0.1", broker.port, "GDN-G1-IN", broker.password("GDN-G1-IN"))
    link = GatewayLink(address, "GDN-G1-IN", "GDN-G1", {}, lambda: int(time.time() * 1000))
    forwarded: list[object] = []
    link.forward_to_bridge = forwarded.append  # type: ignore[method-assign]
    agent = ReaderAgent("GDN-G1-IN", Decoder(), link, to_gray, clock_s=time.monotonic, answer_timeout_s=0.5)
    link.start()
    try:
        outcomes = agent.process(render_badge_frame(token, (1280, 720), rng=np.random.default_rng(7)))
    finally:
        link.stop()
    assert [(o.allow, o.reason) for o in outcomes] == [(False, "gateway_unreachable")]
    assert forwarded == []


@pytest.mark.parametrize("reader_clock_off_ms", [-10 * 60_000, 10 * 60_000])
def test_a_reader_whose_clock_is_minutes_off_still_takes_genuine_answers(  # type: ignore[no-untyped-def]
    running, broker, reader_clock_off_ms: int
) -> None:
    """Freshness is judged on the gateway's clock (decided_ms plus the time since the request left)."""
    _, badge, instance = running
    address = BrokerAddress("127.0.0.1", broker.port, "STA-G1-IN", broker.password("STA-G1-IN"))
    link = GatewayLink(
        address, "STA-G1-IN", "STA-G1", _decision_keys(instance), lambda: int(time.time() * 1000) + reader_clock_off_ms
    )
    link.start()
    try:
        answer = link.ask(badge.token, timeout_s=5)
        assert answer is not None and (answer.allow, answer.reason) == (True, "granted")
        assert link.rejected == 0
    finally:
        link.stop()


def test_reply_properties_are_what_paho_builds_and_leave_the_template_empty() -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from gateway.mqttlink import reply_properties

    for correlation in (b"a" * 32, secrets.token_bytes(16)):
        built = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        built.CorrelationData = correlation
        ours = reply_properties(correlation)
        assert ours.pack() == built.pack()  # type: ignore[no-untyped-call]
        assert ours.CorrelationData == correlation
    assert reply_properties(b"z").pack() != reply_properties(b"y").pack()  # type: ignore[no-untyped-call]
    from gateway import mqttlink

    empty = Properties(PacketTypes.PUBLISH).pack()  # type: ignore[no-untyped-call]
    assert mqttlink._REPLY_TEMPLATE.pack() == empty  # type: ignore[no-untyped-call]
