"""Manual override over the real broker and both databases: guard login with badge + PIN, look-up, manual and
forced decisions under the same rules as scans, audited before answered, and the ACL around the guard topics."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from gateway import contract, guards
from gateway.broker_setup import GATEWAY_USER
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry, Badge
from gateway.holders import Actor
from gateway.manual_decisions import GuardDesk
from gateway.manual_worker import GuardWorker
from gateway.mqttlink import BrokerAddress
from readers.manual_link import GuardLink
from tests.factories import badged_holder
from tests.mqtt_helpers import Listener
from tests.test_broker_acl import publish_as

READER = "STA-G1-IN"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Desk:
    link: GuardLink
    sessions: object
    guard: Badge  # the guard's own badge (no override right)
    lead_guard: Badge  # a guard with the override right
    visitor: Badge  # a holder whose badge does not open the stadium's inner zones


def make_guard(instance, badge: Badge, pin: str, override: bool) -> None:  # type: ignore[no-untyped-def]
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s, s.begin():
        guards.set_guard(s, badge.holder_id, pin, override, utc_now(), Actor("test-desk"))


@pytest.fixture
def desk(instance, site, broker) -> Iterator[Desk]:  # type: ignore[no-untyped-def]
    now = utc_now()
    zones = ["STADIUM-PERIMETER", "STADIUM-CONCOURSE"]
    guard = badged_holder(instance, site, zones, now, name=("Durand", "Paul"))
    lead_guard = badged_holder(instance, site, zones, now, name=("Moreau", "Anne"))
    visitor = badged_holder(  # their badge opens the station, not the stadium
        instance, site, ["STATION-CHECKPOINT"], now, name=("Schmidt", "Jonas"),
        organisation=("BPOL", "Bundespolizei", "police", "DE"),
    )
    make_guard(instance, guard, "1234", override=False)
    make_guard(instance, lead_guard, "987654", override=True)
    sessions = session_factory(make_engine(instance.settings.database_url))
    service = GuardDesk(site, lambda: instance.keyring, instance.settings.issuer, sessions, utc_now)
    worker = GuardWorker(
        service, BrokerAddress("127.0.0.1", broker.port, GATEWAY_USER, broker.password(GATEWAY_USER)), "test-guards"
    )
    worker.start()
    public = instance.keyring.decision_signing.public_key()
    keys = {contract.key_id(public): public}
    link = GuardLink(
        BrokerAddress("127.0.0.1", broker.port, READER, broker.password(READER)),
        READER,
        keys,
        lambda: int(time.time() * 1000),
    )
    link.start()
    try:
        yield Desk(link, sessions, guard, lead_guard, visitor)
    finally:
        link.stop()
        worker.stop()


def audit_rows(desk: Desk, kind: str) -> list[AuditEntry]:
    with desk.sessions() as s:  # type: ignore[operator]
        return list(s.scalars(select(AuditEntry).where(AuditEntry.kind == kind).order_by(AuditEntry.seq)))


def login(desk: Desk, badge: str, pin: str) -> contract.GuardAnswer:
    answer = desk.link.ask("login", badge=badge, pin=pin)
    assert answer is not None
    return answer


def test_a_guard_logs_in_looks_up_and_gets_a_manual_decision_audited_as_theirs(desk: Desk, site) -> None:  # type: ignore[no-untyped-def]
    wrong = login(desk, desk.guard.id, "0000")
    assert (wrong.ok, wrong.error) == (False, "login_refused")
    ok = login(desk, desk.guard.id, "1234")
    assert ok.ok and ok.body["guard"]["can_override"] is False
    session = ok.body["session"]

    found = desk.link.ask("lookup", session=session, query="bundespolizei")
    assert found is not None and found.ok
    assert [h["id"] for h in found.body["holders"]] == [desk.visitor.holder_id]
    assert found.body["holders"][0]["badges"] == [desk.visitor.id]
    by_badge = desk.link.ask("lookup", session=session, query=desk.visitor.id)
    assert by_badge is not None and [h["name"] for h in by_badge.body["holders"]] == ["Jonas SCHMIDT"]

    answer = desk.link.ask("decide", session=session, holder=desk.visitor.holder_id)
    assert answer is not None and answer.ok
    decision = contract.decision_in(answer.body)
    assert decision is not None and decision.nonce == answer.nonce
    keys = {decision.kid: desk.link.keys[decision.kid]}
    assert contract.answer_problem(decision, keys, reader=READER, nonce=answer.nonce, gate="STA-G1",
                                   now_ms=int(time.time() * 1000)) is None
    assert (decision.allow, decision.reason) == (False, "zone_not_permitted")
    [entry] = [e for e in audit_rows(desk, "decision") if e.ref == answer.nonce]
    assert (entry.mode, entry.operator, entry.holder_id, entry.allow) == (
        "manual", guards.identity(desk.guard.holder_id), desk.visitor.holder_id, False
    )
    assert [e.detail for e in audit_rows(desk, "guard_login_refused")] == ["wrong PIN (1 in a row)"]


def test_a_guard_without_the_right_cannot_force_and_a_guard_with_it_can(desk: Desk) -> None:
    plain = login(desk, desk.guard.id, "1234").body["session"]
    refused = desk.link.ask("force", session=plain, holder=desk.visitor.holder_id, why="medical_emergency", note="x")
    assert refused is not None and (refused.ok, refused.error) == (False, "no_override_right")
    assert "decision" not in refused.body
    assert [e.operator for e in audit_rows(desk, "override_refused")] == [guards.identity(desk.guard.holder_id)]

    lead = login(desk, desk.lead_guard.id, "987654").body["session"]
    no_reason = desk.link.ask("force", session=lead, holder=desk.visitor.holder_id, why="other", note="  ")
    assert no_reason is not None and no_reason.error == "force_reason_missing"
    forced = desk.link.ask(
        "force", session=lead, holder=desk.visitor.holder_id, why="medical_emergency", note="collapsed at the gate"
    )
    assert forced is not None and forced.ok
    decision = contract.decision_in(forced.body)
    assert decision is not None and (decision.allow, decision.reason) == (True, "forced_grant")
    [entry] = [e for e in audit_rows(desk, "decision") if e.ref == forced.nonce]
    assert (entry.mode, entry.allow, entry.operator) == ("forced", True, guards.identity(desk.lead_guard.holder_id))
    assert "medical_emergency: collapsed at the gate" in entry.detail and "zone_not_permitted" in entry.detail
    [alarm] = audit_rows(desk, "alarm")
    assert (alarm.reason, alarm.gate, alarm.holder_id, alarm.ref) == (
        "forced_grant", "STA-G1", desk.visitor.holder_id, f"alarm:{forced.nonce}"
    )
    assert alarm.seq == entry.seq + 1


def test_requests_without_a_live_session_are_refused_and_leaving_ends_it(desk: Desk) -> None:
    forged = desk.link.ask("decide", session="not-a-session", holder=desk.visitor.holder_id)
    assert forged is not None and forged.error == "no_guard_session"
    session = login(desk, desk.guard.id, "1234").body["session"]
    assert desk.link.ask("logout", session=session, note="left the post").ok  # type: ignore[union-attr]
    after = desk.link.ask("lookup", session=session, query="Schmidt")
    assert after is not None and after.error == "no_guard_session"
    assert [e.detail for e in audit_rows(desk, "guard_logout")] == ["left the post"]


def test_wrong_pins_lock_the_guard_out_even_with_the_right_pin(desk: Desk) -> None:
    for _ in range(guards.MAX_PIN_FAILURES):
        assert login(desk, desk.guard.id, "9999").error == "login_refused"
    assert login(desk, desk.guard.id, "1234").error == "guard_locked"
    assert login(desk, desk.lead_guard.id, "987654").ok  # one guard's lock-out is not another's


def test_a_revoked_guard_badge_and_a_holder_who_is_not_a_guard_cannot_log_in(desk: Desk, instance, site) -> None:  # type: ignore[no-untyped-def]
    assert login(desk, desk.visitor.id, "1234").error == "login_refused"  # not a guard
    stolen = badged_holder(instance, site, ["STADIUM-PERIMETER"], utc_now(), name=("Petit", "Marc"), revoked=True)
    make_guard(instance, stolen, "4321", override=True)
    assert login(desk, stolen.id, "4321").error == "login_refused"
    assert login(desk, stolen.token, "4321").error == "login_refused"  # its QR text: genuine, but revoked
    assert login(desk, desk.guard.token, "1234").ok  # a guard's badge read by the camera


def test_a_reader_cannot_use_another_readers_guard_topics(broker) -> None:  # type: ignore[no-untyped-def]
    answers = contract.guard_answer_topic("STA-G2-IN")
    with Listener(broker, "STA-G1-IN", [answers]) as eavesdropper, Listener(broker, "STA-G2-IN", [answers]) as owner:
        publish_as(broker, "gateway", answers, b"for STA-G2-IN only")
        assert owner.wait_for(lambda m: m.payload == b"for STA-G2-IN only") is not None
        assert eavesdropper.wait_for(lambda m: True, timeout=1) is None
    with Listener(broker, "gateway", ["acs/v1/readers/+/guard/request"]) as gateway:
        publish_as(broker, "STA-G1-IN", contract.guard_request_topic("STA-G2-IN"), b"spoofed")
        publish_as(broker, "STA-G1-IN", contract.guard_answer_topic("STA-G1-IN"), b"forged answer")
        publish_as(broker, "STA-G2-IN", contract.guard_request_topic("STA-G2-IN"), b"own")
        assert gateway.wait_for(lambda m: m.payload == b"own") is not None
        assert [m.payload for m in gateway.messages] == [b"own"]


def test_guard_messages_are_strict_and_answers_are_checked() -> None:
    request = contract.GuardRequest(reader=READER, nonce="a" * 32, op="login", sent_ms=1, badge="B1", pin="1234")
    assert contract.GuardRequest.from_json(request.to_json()) == request
    for bad in (
        request.to_json().replace(b'"login"', b'"sudo"'),
        request.to_json().replace(b'"1234"', b'"12ab"'),
        request.to_json().replace(b'"why":""', b'"why":"bored"'),
        request.to_json().replace(b'"note":""', b'"note":"' + b"x" * 301 + b'"'),
    ):
        with pytest.raises(contract.ContractError):
            contract.GuardRequest.from_json(bad)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = {contract.key_id(key.public_key()): key.public_key()}
    answer = contract.sign_guard_answer(
        contract.GuardAnswer(READER, "a" * 32, "lookup", True, "", {"holders": []}, 1, ""), key
    )
    parsed = contract.GuardAnswer.from_json(answer.to_json())
    assert contract.guard_answer_problem(parsed, keys, reader=READER, nonce="a" * 32) is None
    assert contract.guard_answer_problem(parsed, keys, reader="STA-G2-IN", nonce="a" * 32) is not None
    tampered = contract.GuardAnswer(**{**parsed.__dict__, "body": {"holders": [{"id": "x"}]}})
    assert contract.guard_answer_problem(tampered, keys, reader=READER, nonce="a" * 32) == "bad signature"
    forged = contract.sign_guard_answer(parsed, other)
    assert contract.guard_answer_problem(forged, keys, reader=READER, nonce="a" * 32) is not None


def test_the_post_logs_a_guard_in_by_camera_and_out_when_idle(desk: Desk) -> None:
    from readers.gate_page import GatePost

    now = [1000.0]
    forwarded: list[contract.DecisionAnswer] = []
    post = GatePost(
        READER, "STA-G1", desk.link, forwarded.append, desk.link.keys, lambda: now[0],
        lambda: int(time.time() * 1000), idle_s=60,
    )
    scene = ["https://example.org/not-a-badge", desk.guard.token]
    assert post.take_guard_badge(scene) == scene  # not armed: the badge is a passage like any other
    post.arm_badge_scan()
    assert post.take_guard_badge(scene) == ["https://example.org/not-a-badge"]  # armed: it is the guard's login
    assert post.login("browser-1", "", "1234") == ""
    duty = post.guard_for("browser-1")
    assert duty is not None and post.guard_for("browser-2") is None
    result = post.decide(duty, desk.visitor.holder_id)
    assert result.decided is not None and not result.decided.allow and forwarded[-1].nonce == result.decided.nonce
    now[0] += 59
    assert post.guard_for("browser-1") is not None  # touched in time: still on duty
    now[0] += 61
    assert post.guard_for("browser-1") is None
    assert [e.detail for e in audit_rows(desk, "guard_logout")] == ["idle timeout at the gate page"]
    assert desk.link.ask("lookup", session=duty.session, query="x").error == "no_guard_session"  # type: ignore[union-attr]


def test_desk_makes_a_guard_from_the_command_line(instance, site) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from gateway.cli import main

    badge = badged_holder(instance, site, ["STADIUM-PERIMETER"], utc_now(), name=("Roux", "Eva"))
    runner = CliRunner()
    args = ["guard", "add", badge.holder_id, "--instance", str(instance.folder), "--override"]
    bad = runner.invoke(main, args, input="12\n12\n")
    assert bad.exit_code != 0 and "4 to 12 digits" in bad.output
    done = runner.invoke(main, args, input="2468\n2468\n")
    assert done.exit_code == 0, done.output
    listed = runner.invoke(main, ["guard", "list", "--instance", str(instance.folder)])
    assert f"{badge.holder_id}\tEva Roux\toverride\tactive" in listed.output
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s, s.begin():
        outcome = guards.login(s, site, instance.keyring, instance.settings.issuer, READER, badge.id, "2468", utc_now())
    assert outcome.token and outcome.guard is not None and outcome.guard.can_override
