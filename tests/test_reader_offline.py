"""Offline operation without a broker: the reader's local store, what it believes of the gateway's site messages,
its decisions by each gate's offline policy, the bridge's rules for offline answers, and the gateway's audit
of uploaded offline decisions (on SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import stat
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from firmware_bridge.gate import GateDriver
from gateway import audit, contract, tokens
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry, Position
from gateway.offline_uploads import OfflineUploadService, UploadRefused
from gateway.site import Site
from readers.offline import OfflineOperation
from readers.offline_keys import OfflineKeyError, generate_offline_key, load_offline_key
from readers.offline_site import SiteKnowledge
from readers.offline_store import OfflineStore
from tests.mqtt_helpers import Listener
from tests.test_bridge_gate import FakeLink

ISSUER = "PAR24"
# Noon in Paris on a weekday: inside every zone's schedule.
NOON = dt.datetime(2026, 7, 21, 10, 0, tzinfo=dt.UTC)
NOON_MS = int(NOON.timestamp() * 1000)


class World:
    """A decision key, a badge key, the site messages the gateway would publish, and badges."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.decision_key = Ed25519PrivateKey.generate()
        self.badge_key = Ed25519PrivateKey.generate()
        self.decision_keys = {contract.key_id(self.decision_key.public_key()): self.decision_key.public_key()}

    def message(self, kind: str, version: int, body: dict[str, Any]) -> bytes:
        unsigned = contract.SiteMessage(kind=kind, version=version, issued_ms=NOON_MS, body=body, kid="")
        return contract.sign_site_message(unsigned, self.decision_key).to_json()

    def keys_message(self, version: int = 1) -> bytes:
        raw = self.badge_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        kid = tokens.badge_key_id(self.badge_key.public_key())
        return self.message(
            "keys", version, {"issuer": ISSUER, "badge_keys": [{"kid": kid, "x": contract.b64url(raw)}]}
        )

    def revocations(self, version: int, badges: list[str] = (), holders: list[str] = ()) -> bytes:  # type: ignore[assignment]
        return self.message("revocations", version, {"badges": list(badges), "holders": list(holders)})

    def badge(self, zones: list[str], badge_id: str | None = None, holder_id: str | None = None, days: int = 2) -> str:
        return tokens.issue_token(
            self.badge_key,
            issuer=ISSUER,
            badge_id=badge_id or secrets.token_urlsafe(6),
            holder_id=holder_id or secrets.token_urlsafe(6),
            zones=[self.site.zones[z].on_badge for z in zones],
            not_before=int(NOON.timestamp()) - 86400,
            expires=int(NOON.timestamp()) + days * 86400,
        )


@pytest.fixture
def world(site: Site) -> World:
    return World(site)


def operation(world: World, store: OfflineStore, reader: str, key: Ed25519PrivateKey | None) -> OfflineOperation:
    knowledge = SiteKnowledge(world.site, store, world.decision_keys)
    return OfflineOperation(reader, store, knowledge, key, clock_ms=lambda: NOON_MS)


def informed(world: World, store: OfflineStore, **revoked: list[str]) -> SiteKnowledge:
    knowledge = SiteKnowledge(world.site, store, world.decision_keys)
    knowledge.receive(contract.SITE_TOPICS["keys"], world.keys_message())
    knowledge.receive(contract.SITE_TOPICS["revocations"], world.revocations(5, **revoked))
    return knowledge


# --- the local store and what the reader believes ---------------------------------------------------


def test_site_messages_are_believed_only_when_signed_and_newer_and_survive_a_restart(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = OfflineStore(tmp_path / "reader.sqlite")
    knowledge = informed(world, store, badges=["STOLEN01"])
    assert knowledge.now.revoked_badges == {"STOLEN01"} and knowledge.now.issuer == ISSUER
    # An older version (a replay) is ignored; a forged one too.
    knowledge.receive(contract.SITE_TOPICS["revocations"], world.revocations(4))
    forger = World(world.site)
    knowledge.receive(contract.SITE_TOPICS["revocations"], forger.revocations(9))
    knowledge.receive(contract.SITE_TOPICS["threat_level"], world.message("threat_level", 3, {"level": "emergency"}))
    assert knowledge.now.revoked_badges == {"STOLEN01"} and knowledge.now.level == "emergency"
    # A kind on another kind's topic is not believed.
    knowledge.receive(contract.SITE_TOPICS["revocations"], world.message("threat_level", 7, {"level": "vigilance"}))
    assert knowledge.now.level == "emergency"
    store.close()

    reopened = OfflineStore(tmp_path / "reader.sqlite")
    again = SiteKnowledge(world.site, reopened, world.decision_keys)
    assert again.now.revoked_badges == {"STOLEN01"} and again.now.level == "emergency"
    assert set(again.now.badge_keys) == {tokens.badge_key_id(world.badge_key.public_key())}
    # Read back under other pinned keys (the decision key changed), nothing is believed.
    stranger = SiteKnowledge(world.site, reopened, forger.decision_keys)
    assert stranger.now.badge_keys == {} and stranger.now.revoked_badges == frozenset()


def test_queued_decisions_survive_reopening_and_go_only_when_acknowledged(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = OfflineStore(tmp_path / "reader.sqlite")
    op = operation(world, store, "STA-G4-IN", None)  # deny_all
    nonces = [op.decide(world.badge(["STADIUM-FIELD"])).decision.nonce for _ in range(3)]
    store.close()
    store = OfflineStore(tmp_path / "reader.sqlite")
    assert [d.nonce for d in store.pending(10)] == nonces
    op = operation(world, store, "STA-G4-IN", None)
    op.acknowledged(contract.OfflineDecisionAck(reader="STA-G4-IN", nonce=nonces[1]).to_json())
    op.acknowledged(contract.OfflineDecisionAck(reader="STA-G1-IN", nonce=nonces[0]).to_json())  # not ours
    assert [d.nonce for d in store.pending(10)] == [nonces[0], nonces[2]]
    assert op.queued == 2 and op.uploaded == 1


# --- deciding by the offline policy ----------------------------------------------------------------


def test_deny_all_gate_denies_every_badge_and_gives_the_bridge_nothing(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = OfflineStore(tmp_path / "r.sqlite")
    informed(world, store)
    op = operation(world, store, "STA-G4-IN", Ed25519PrivateKey.generate())
    result = op.decide(world.badge(["STADIUM-FIELD"], badge_id="GOODBADG"))
    assert result.policy == "deny_all" and result.answer is None
    d = result.decision
    assert (d.allow, d.reason, d.badge, d.gate) == (False, "gateway_unreachable", "GOODBADG", "STA-G4")
    assert op.offline and store.queued() == 1


def test_verify_locally_checks_signature_validity_revocation_zone_and_signs_its_answer(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = OfflineStore(tmp_path / "r.sqlite")
    informed(world, store, badges=["STOLEN01"], holders=["SUSPEND1"])
    key = Ed25519PrivateKey.generate()
    op = operation(world, store, "STA-G1-IN", key)
    reasons = {}
    for name, token in {
        "good": world.badge(["STADIUM-PERIMETER"]),
        "revoked": world.badge(["STADIUM-PERIMETER"], badge_id="STOLEN01"),
        "suspended": world.badge(["STADIUM-PERIMETER"], holder_id="SUSPEND1"),
        "zone": world.badge(["AIRPORT-LANDSIDE"]),
        "expired": world.badge(["STADIUM-PERIMETER"], days=-1),
        "forged": World(world.site).badge(["STADIUM-PERIMETER"]),
        "garbage": "not.a.token",
    }.items():
        result = op.decide(token)
        assert result.policy == "verify_locally" and result.answer is not None
        answer = result.answer
        assert (answer.allow, answer.reason, answer.nonce) == (
            result.decision.allow,
            result.decision.reason,
            result.decision.nonce,
        )
        assert (
            contract.offline_answer_problem(answer, {"STA-G1-IN": key.public_key()}, gate="STA-G1", now_ms=NOON_MS)
            is None
        )
        reasons[name] = result.decision.reason
    assert reasons == {
        "good": "granted",
        "revoked": "revoked",
        "suspended": "holder_suspended",
        "zone": "zone_not_permitted",
        "expired": "expired",
        "forged": "unknown_kid",
        "garbage": "token_malformed",
    }
    assert store.queued() == 7


def test_local_anti_passback_holds_while_offline_and_is_forgotten_when_the_gateway_is_back(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = OfflineStore(tmp_path / "r.sqlite")
    informed(world, store)
    op = operation(world, store, "STA-G2-IN", Ed25519PrivateKey.generate())  # into the concourse: hard
    token = world.badge(["STADIUM-CONCOURSE"])
    assert op.decide(token).decision.reason == "granted"
    assert op.decide(token).decision.reason == "anti_passback"
    op.gateway_answered()
    assert not op.offline
    assert op.decide(token).decision.reason == "granted"


def test_zone_rules_the_reader_cannot_check_offline_are_refused(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Qualifications and roles live in the gateway's records: offline, a zone that needs them stays shut."""
    store = OfflineStore(tmp_path / "r.sqlite")
    knowledge = informed(world, store)
    knowledge.receive(contract.SITE_TOPICS["threat_level"], world.message("threat_level", 9, {"level": "emergency"}))
    op = OfflineOperation("STA-G1-IN", store, knowledge, Ed25519PrivateKey.generate(), clock_ms=lambda: NOON_MS)
    assert op.decide(world.badge(["STADIUM-PERIMETER"])).decision.reason == "role_not_permitted"


def test_offline_key_is_owner_only_and_never_overwritten(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "keys" / "STA-G1-IN.key"
    public = generate_offline_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_offline_key(path)
    assert contract.public_key_from_pem(public.read_bytes()) is not None
    with pytest.raises(OfflineKeyError):
        generate_offline_key(path)
    assert load_offline_key(path).private_bytes_raw() == key.private_bytes_raw()
    path.chmod(0o644)
    with pytest.raises(OfflineKeyError, match="readable by others"):
        load_offline_key(path)


# --- the contract ----------------------------------------------------------------------------------


def test_offline_answers_never_pass_for_gateway_answers_and_statuses_stay_compatible() -> None:
    key = Ed25519PrivateKey.generate()
    answer = contract.sign_offline_answer(
        contract.OfflineAnswer(
            "STA-G1-IN", "STA-G1", "a" * 32, True, "granted", "GOODBADG", NOON_MS, NOON_MS + 5000, ""
        ),
        key,
    )
    with pytest.raises(contract.ContractError, match="unknown field"):
        contract.DecisionAnswer.from_json(answer.to_json())
    assert contract.OfflineAnswer.from_json(answer.to_json()) == answer
    # Even with the mode stripped, the reader's key signed other bytes than a gateway answer's.
    as_online = contract.DecisionAnswer(**{k: v for k, v in answer.__dict__.items() if k != "mode"})
    assert (
        contract.answer_problem(as_online, {answer.kid: key.public_key()}, reader=None, nonce=None, now_ms=NOON_MS)
        == "bad signature"
    )
    status = contract.ReaderStatus("STA-G1-IN", "online", NOON_MS, 1, 1, 1, 3, mode="offline")
    assert contract.ReaderStatus.from_json(status.to_json()) == status
    online = replace(status, mode="online")
    assert b"mode" not in online.to_json()  # unchanged for those who read the first version
    with pytest.raises(contract.ContractError, match="mode"):
        contract.ReaderStatus.from_json(online.to_json().replace(b'"v":1', b'"v":1,"mode":"asleep"'))


# --- the bridge ------------------------------------------------------------------------------------


class OfflineRig:
    def __init__(self, site: Site, gate: str = "STA-G1") -> None:
        self.site = site
        self.gate = gate
        self.decision_key = Ed25519PrivateKey.generate()
        self.reader_keys = {
            r: Ed25519PrivateKey.generate() for r in ("STA-G1-IN", "STA-G1-OUT", "STA-G4-IN", "STA-G2-IN")
        }
        self.link = FakeLink()
        self.driver = GateDriver(
            site,
            gate,
            self.link,  # type: ignore[arg-type]
            {contract.key_id(self.decision_key.public_key()): self.decision_key.public_key()},
            lambda kind, nonce: None,
            clock=lambda: NOON_MS,
            monotonic=lambda: 1000.0,
            reader_keys={r: k.public_key() for r, k in self.reader_keys.items()},
        )

    def answer(self, reader: str = "STA-G1-IN", signer: str | None = None, **fields: Any) -> contract.OfflineAnswer:
        unsigned = contract.OfflineAnswer(
            reader, self.gate, secrets.token_hex(16), True, "granted", "GOODBADG", NOON_MS, NOON_MS + 5000, ""
        )
        return contract.sign_offline_answer(replace(unsigned, **fields), self.reader_keys[signer or reader])

    def send(self, payload: bytes) -> str:
        outcome = self.driver.handle_command(payload)
        return outcome.action if outcome.acted else f"ignored: {outcome.detail}"


def test_bridge_acts_on_a_genuine_offline_grant_once(site: Site) -> None:
    rig = OfflineRig(site)
    answer = rig.answer()
    assert rig.send(answer.to_json()) == "grant"
    assert rig.send(answer.to_json()).startswith("ignored: replay")
    assert rig.send(rig.answer("STA-G1-OUT", allow=False, reason="revoked").to_json()) == "deny"
    assert [c[0] for c in rig.link.commands] == ["grant", "deny"]


def test_bridge_refuses_offline_answers_it_must_not_trust(site: Site) -> None:
    rig = OfflineRig(site)
    forged = rig.answer(signer="STA-G1-OUT")  # another reader's key, claiming to be STA-G1-IN
    assert "is not reader STA-G1-IN's" in rig.send(forged.to_json())
    assert "no offline key registered" in rig.send(rig.answer("STA-G2-IN").to_json())  # a reader of another gate
    stale = rig.answer(decided_ms=NOON_MS - 6000, expires_ms=NOON_MS - 1000)
    assert "expired" in rig.send(stale.to_json())
    greedy = rig.answer(expires_ms=NOON_MS + 60_000)
    assert "longer than the contract allows" in rig.send(greedy.to_json())
    tampered = json.loads(rig.answer(allow=False, reason="revoked").to_json())
    tampered.update(allow=True, reason="granted")
    assert "bad signature" in rig.send(json.dumps(tampered).encode())
    assert rig.link.commands == []


def test_bridge_of_a_deny_all_gate_ignores_offline_answers(site: Site) -> None:
    rig = OfflineRig(site, gate="STA-G4")
    assert "offline_policy is deny_all" in rig.send(rig.answer("STA-G4-IN").to_json())
    assert rig.link.commands == []


# --- the gateway's audit of uploads ------------------------------------------------------------------


def upload(
    nonce: str, *, allow: bool = True, holder: str = "", badge: str = "", decided: dt.datetime = NOON
) -> contract.OfflineDecision:
    return contract.OfflineDecision(
        reader="STA-G1-IN",
        gate="STA-G1",
        nonce=nonce,
        allow=allow,
        reason="granted" if allow else "revoked",
        badge=badge,
        holder=holder,
        decided_ms=int(decided.timestamp() * 1000),
        detail="offline policy verify_locally; threat level vigilance; into STADIUM-PERIMETER",
    )


def test_uploads_are_audited_once_as_offline_with_both_times(database_url: str, site: Site) -> None:
    sessions = session_factory(make_engine(database_url))
    received = NOON + dt.timedelta(hours=2)
    service = OfflineUploadService(site, sessions, clock=lambda: received)
    first, second = secrets.token_hex(16), secrets.token_hex(16)
    assert not service.record(upload(first, badge="GOODBADG", holder="HOLDER01")).duplicate
    assert service.record(upload(first, badge="GOODBADG", holder="HOLDER01")).duplicate
    assert not service.record(upload(second, allow=False)).duplicate
    with pytest.raises(UploadRefused):
        service.record(replace(upload(secrets.token_hex(16)), gate="STA-G4"))
    with sessions() as s:
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.kind == "decision").order_by(AuditEntry.seq)))
        assert [(r.ref, r.mode, r.allow) for r in rows] == [(first, "offline", True), (second, "offline", False)]
        assert audit.to_ms(rows[0].at) == NOON and audit.to_ms(rows[0].recorded_at) == received
        assert (rows[0].reader, rows[0].gate, rows[0].badge_id, rows[0].holder_id) == (
            "STA-G1-IN",
            "STA-G1",
            "GOODBADG",
            "HOLDER01",
        )


def test_a_passage_reported_before_its_offline_grant_moves_the_holder_when_the_grant_arrives(
    database_url: str, site: Site
) -> None:
    from gateway.gate_events import GateEventService
    from gateway.positions import passage_hook

    sessions = session_factory(make_engine(database_url))
    received = NOON + dt.timedelta(minutes=30)
    nonce = secrets.token_hex(16)
    events = GateEventService(sessions=sessions, clock=lambda: received, on_event=passage_hook(site))
    passed = NOON + dt.timedelta(seconds=3)
    events.record(contract.GateEvent("STA-G1", "passage", 7, int(passed.timestamp() * 1000), nonce))
    with sessions() as s:
        assert s.get(Position, "HOLDER01") is None  # nobody knew the grant yet
    OfflineUploadService(site, sessions, clock=lambda: received).record(upload(nonce, holder="HOLDER01"))
    with sessions() as s:
        position = s.get(Position, "HOLDER01")
        assert position is not None and (position.zone, position.gate) == ("STADIUM-PERIMETER", "STA-G1")
        assert audit.to_ms(position.since) == audit.to_ms(passed)


# --- the broker's ACL for uploads ------------------------------------------------------------------


def test_a_reader_uploads_and_hears_acknowledgements_only_for_itself(broker) -> None:  # type: ignore[no-untyped-def]
    from tests.test_broker_acl import publish_as

    uploads = "acs/v1/readers/+/offline"
    with Listener(broker, "gateway", [uploads]) as gateway:
        publish_as(broker, "STA-G1-IN", contract.offline_upload_topic("STA-G2-IN"), b"in another's name")
        publish_as(broker, "STA-G2-IN", contract.offline_upload_topic("STA-G2-IN"), b"own")
        assert gateway.wait_for(lambda m: m.payload == b"own") is not None
        assert [m.payload for m in gateway.messages] == [b"own"]
    ack = contract.offline_ack_topic("STA-G2-IN")
    with Listener(broker, "STA-G1-IN", [ack]) as eavesdropper, Listener(broker, "STA-G2-IN", [ack]) as owner:
        publish_as(broker, "STA-G1-IN", ack, b"forged ack")
        publish_as(broker, "gateway", ack, b"genuine ack")
        assert owner.wait_for(lambda m: m.payload == b"genuine ack") is not None
        assert [m.payload for m in owner.messages] == [b"genuine ack"]
        assert eavesdropper.wait_for(lambda m: True, timeout=1) is None


# --- the agent switching between online and offline --------------------------------------------------


class SilentGateway:
    """The agent's link while the gateway is away: every ask times out; records what reaches the bridge."""

    def __init__(self) -> None:
        self.asked = 0
        self.forwarded: list[Any] = []

    def ask(self, token: str, timeout_s: float) -> None:
        self.asked += 1

    def forward_to_bridge(self, answer: Any) -> None:
        self.forwarded.append(answer)


class TextDecoder:
    """Each frame is a 0-d array holding the QR text it shows."""

    def decode(self, gray: Any) -> list[str]:
        return [str(gray.item())]


def test_the_agent_switches_to_offline_by_itself_and_back_on_the_first_acknowledgement(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from readers.agent import ReaderAgent

    store = OfflineStore(tmp_path / "r.sqlite")
    informed(world, store)
    modes: list[str] = []
    op = OfflineOperation(
        "STA-G1-IN",
        store,
        SiteKnowledge(world.site, store, world.decision_keys),
        Ed25519PrivateKey.generate(),
        clock_ms=lambda: NOON_MS,
        on_mode=modes.append,
    )
    link = SilentGateway()
    clock = [0.0]
    agent = ReaderAgent("STA-G1-IN", TextDecoder(), link, lambda f: f, clock_s=lambda: clock[0], offline=op)  # type: ignore[arg-type]

    def show(token: str) -> Any:
        clock[0] += 10  # a new presentation each time
        [outcome] = agent.process(np.array(token, dtype=object))
        return outcome

    first = show(world.badge(["STADIUM-PERIMETER"]))
    assert (first.allow, first.reason, first.mode) == (True, "granted", "offline")
    assert link.asked == 1 and agent.mode == "offline" and agent.offline_queue == 1
    assert [a.nonce for a in link.forwarded] == [first.nonce] and link.forwarded[0].mode == "offline"
    second = show(world.badge(["STADIUM-PERIMETER"]))
    assert link.asked == 1 and second.mode == "offline" and agent.offline_queue == 2  # no waiting while offline
    op.acknowledged(contract.OfflineDecisionAck(reader="STA-G1-IN", nonce=first.nonce).to_json())
    assert agent.mode == "online" and agent.offline_queue == 1 and modes == ["offline", "online"]
    show(world.badge(["STADIUM-PERIMETER"]))
    assert link.asked == 2  # online again: the gateway is asked first
