"""Forged and misplaced badges: each is refused with its own reason, by tokens.verify_token and in the answer
the decision service signs (reason codes: docs/protocol.md). tests/test_tokens.py holds the basic cases;
this file adds the attacker's kit: key confusion in every key form, hostile `kid`, key-carrying headers,
leeway edges, and tokens of one kind pasted where another is expected.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import event, select

from gateway import contract
from gateway.core import BadgeClaims, Reason, TokenProblem
from gateway.db.models import AuditEntry
from gateway.tokens import badge_key_id, verify_token
from tests.factories import badged_holder, decision_service

NOW = dt.datetime(2026, 7, 26, 19, 30, tzinfo=dt.UTC)
LEEWAY_S = 30  # docs/protocol.md: "Validity is judged with a leeway of 30 s either side"
ATTACKER = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return json.loads(unb64(header)), json.loads(unb64(payload))


def sign_ed(header: dict[str, Any], claims: dict[str, Any], key: Ed25519PrivateKey) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def sign_hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64(json.dumps({**header, 'alg': 'HS256'}).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def public_key_forms(pub: Ed25519PublicKey) -> dict[str, bytes]:
    """Every way the public key is published or stored, each a secret an HS256 forger could try."""
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
    return {
        "raw": raw,
        "pem": pub.public_bytes(serialization.Encoding.PEM, spki),
        "der": pub.public_bytes(serialization.Encoding.DER, spki),
        "jwk": json.dumps(jwk).encode(),
        "jwk-sorted": json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode(),
        "x": b64(raw).encode(),
    }


# --- the forgeries, each a function of (genuine token, badge signing key, kid) ---------------------------------

Forge = Callable[[str, Ed25519PrivateKey, str], str]


def _alg_none(token: str, _key: Ed25519PrivateKey, _kid: str) -> str:
    header, claims = parts(token)
    return f"{b64(json.dumps({**header, 'alg': 'none'}).encode())}.{b64(json.dumps(claims).encode())}."


def _hs256(form: str) -> Forge:
    def forge(token: str, key: Ed25519PrivateKey, _kid: str) -> str:
        header, claims = parts(token)
        return sign_hs256(header, claims, public_key_forms(key.public_key())[form])

    return forge


def _kid(value: str) -> Forge:
    def forge(token: str, _key: Ed25519PrivateKey, _kid: str) -> str:
        header, claims = parts(token)
        return sign_ed({**header, "kid": value}, claims, ATTACKER)

    return forge


def _attacker_key_in_header(name: str) -> Forge:
    """Signed by the attacker, who names their own key in a key-carrying header and keeps the genuine kid."""
    raw = ATTACKER.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    values = {
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(raw), "kid": "x"},
        "jku": "https://evil.example/jwks.json",
        "x5u": "https://evil.example/cert.pem",
        "x5c": ["MIIBADCBs6ADAgECAgEBMAUGAytlcDAAMB4XDTI2MDEwMTAwMDAwMFoXDTM2MDEwMTAwMDAwMFowADAqMAUGAytlcAMhAA"],
    }

    def forge(token: str, _key: Ed25519PrivateKey, _kid: str) -> str:
        header, claims = parts(token)
        return sign_ed({**header, name: values[name]}, claims, ATTACKER)

    return forge


def _own_kid_attacker(token: str, _key: Ed25519PrivateKey, _kid: str) -> str:
    """The attacker's key named by its own kid and carried in `jwk`: a self-signed badge."""
    header, claims = parts(token)
    raw = ATTACKER.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
    return sign_ed({**header, "kid": badge_key_id(ATTACKER.public_key()), "jwk": jwk}, claims, ATTACKER)


def _resigned(header_change: dict[str, Any] | None = None, claim_change: dict[str, Any] | None = None) -> Forge:
    """Re-signed with the genuine key (an insider's mistake, or a key-holder's test token) with changed fields;
    a value of None removes the field."""

    def forge(token: str, key: Ed25519PrivateKey, _kid: str) -> str:
        header, claims = parts(token)
        for target, change in ((header, header_change or {}), (claims, claim_change or {})):
            for name, value in change.items():
                if value is None:
                    target.pop(name, None)
                else:
                    target[name] = value
        return sign_ed(header, claims, key)

    return forge


FORGERIES: list[Any] = [
    pytest.param(_alg_none, Reason.BAD_SIGNATURE, id="alg-none"),
    *[
        pytest.param(_hs256(form), Reason.BAD_SIGNATURE, id=f"hs256-{form}")
        for form in public_key_forms(ATTACKER.public_key())
    ],
    pytest.param(_kid("../../../../etc/passwd"), Reason.UNKNOWN_KID, id="kid-path"),
    pytest.param(_kid("/dev/zero"), Reason.UNKNOWN_KID, id="kid-device"),
    pytest.param(_kid("x' OR '1'='1"), Reason.UNKNOWN_KID, id="kid-sql"),
    pytest.param(_kid("1; DROP TABLE badges; --"), Reason.UNKNOWN_KID, id="kid-sql-drop"),
    pytest.param(_kid("ZZZZ"), Reason.UNKNOWN_KID, id="kid-unknown"),
    pytest.param(_attacker_key_in_header("jwk"), Reason.BAD_SIGNATURE, id="jwk-header"),
    pytest.param(_attacker_key_in_header("jku"), Reason.BAD_SIGNATURE, id="jku-header"),
    pytest.param(_attacker_key_in_header("x5u"), Reason.BAD_SIGNATURE, id="x5u-header"),
    pytest.param(_attacker_key_in_header("x5c"), Reason.BAD_SIGNATURE, id="x5c-header"),
    pytest.param(_own_kid_attacker, Reason.UNKNOWN_KID, id="self-signed-jwk"),
    pytest.param(_resigned({"crit": ["acs-override"], "acs-override": True}), Reason.TOKEN_MALFORMED, id="crit"),
    pytest.param(_resigned({"typ": None}), Reason.WRONG_TYP, id="typ-missing"),
    pytest.param(_resigned({"typ": "JWT"}), Reason.WRONG_TYP, id="typ-wrong"),
    pytest.param(_resigned({"typ": "decision"}), Reason.WRONG_TYP, id="typ-decision"),
    pytest.param(_resigned(claim_change={"iss": None}), Reason.TOKEN_MALFORMED, id="iss-missing"),
    pytest.param(_resigned(claim_change={"iss": "LON12"}), Reason.WRONG_ISSUER, id="iss-wrong"),
    pytest.param(_resigned(claim_change={"exp": None}), Reason.TOKEN_MALFORMED, id="exp-missing"),
    pytest.param(_resigned(claim_change={"exp": "never"}), Reason.TOKEN_MALFORMED, id="exp-wrong"),
    pytest.param(_resigned(claim_change={"nbf": None}), Reason.TOKEN_MALFORMED, id="nbf-missing"),
    pytest.param(_resigned(claim_change={"nbf": 1.5}), Reason.TOKEN_MALFORMED, id="nbf-wrong"),
    pytest.param(_resigned(claim_change={"jti": None}), Reason.TOKEN_MALFORMED, id="jti-missing"),
    pytest.param(_resigned(claim_change={"jti": "../x"}), Reason.TOKEN_MALFORMED, id="jti-wrong"),
]


# --- against tokens.verify_token ---------------------------------------------------------------------------

BADGE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
KID = badge_key_id(BADGE_KEY.public_key())
KEYS = {KID: BADGE_KEY.public_key()}
ISSUER = "PAR24"
CLAIMS = {"iss": ISSUER, "jti": "B-7f3a9c", "sub": "H-1c2d3e", "zn": "P C", "nbf": 1_784_498_400, "exp": 1_786_485_600}
GENUINE = sign_ed({"alg": "EdDSA", "kid": KID, "typ": "badge"}, CLAIMS, BADGE_KEY)


class Watch:
    """Records, through a Python audit hook, every file opened and every socket connected while armed."""

    armed = False
    seen: list[tuple[str, str]] = []  # noqa: RUF012

    @classmethod
    def hook(cls, name: str, args: tuple[Any, ...]) -> None:
        if cls.armed and name in ("open", "os.open", "socket.connect", "socket.getaddrinfo", "sqlite3.connect"):
            cls.seen.append((name, repr(args)[:120]))


sys.addaudithook(Watch.hook)  # audit hooks cannot be removed; this one does nothing unless armed


@pytest.fixture
def watched() -> Iterator[list[tuple[str, str]]]:
    Watch.seen = []
    Watch.armed = True
    try:
        yield Watch.seen
    finally:
        Watch.armed = False


def test_the_genuine_token_verifies() -> None:
    assert isinstance(verify_token(GENUINE, KEYS, ISSUER), BadgeClaims)


@pytest.mark.parametrize(("forge", "reason"), FORGERIES)
def test_forgery_is_refused_with_its_reason_and_touches_no_file(
    forge: Forge, reason: Reason, watched: list[tuple[str, str]]
) -> None:
    result = verify_token(forge(GENUINE, BADGE_KEY, KID), KEYS, ISSUER)
    assert isinstance(result, TokenProblem) and result.reason == reason, result
    assert watched == []  # no key file, no database, no URL fetched because of what the token says


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c"])
def test_key_carrying_headers_are_ignored_on_a_genuine_token(name: str, watched: list[tuple[str, str]]) -> None:
    """Genuinely signed with such a header added, the token still verifies, by the accepted key alone: nothing
    is fetched and no key is taken from the token."""
    header = {"alg": "EdDSA", "kid": KID, "typ": "badge", name: "https://evil.example/k" if name[0] != "x" else ["A"]}
    if name == "jwk":
        header[name] = {"kty": "OKP", "crv": "Ed25519", "x": "A" * 43}
    assert isinstance(verify_token(sign_ed(header, CLAIMS, BADGE_KEY), KEYS, ISSUER), BadgeClaims)
    assert watched == []


# --- through the decision service: the signed answer carries the reason ---------------------------------------


@pytest.fixture
def world(instance, site):  # type: ignore[no-untyped-def]
    clock = [NOW]
    service = decision_service(instance, site, lambda: clock[0])
    badge = badged_holder(instance, site, ["STADIUM-PERIMETER", "STADIUM-CONCOURSE"], NOW)
    return service, clock, badge, instance


def ask(service, token: str, reader: str = "STA-G1-IN") -> contract.DecisionAnswer:  # type: ignore[no-untyped-def]
    return service.answer(contract.DecisionRequest(reader=reader, nonce=secrets.token_hex(16), token=token, sent_ms=0))


def decision_rows(service) -> list[AuditEntry]:  # type: ignore[no-untyped-def]
    with service.sessions() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.kind == "decision")))


@pytest.mark.parametrize(("forge", "reason"), FORGERIES)
def test_forgery_is_denied_by_the_decision_service_with_its_reason(world, forge: Forge, reason: Reason) -> None:  # type: ignore[no-untyped-def]
    service, _, badge, instance = world
    assert ask(service, badge.token).allow  # control: the genuine badge opens this reader
    forged = forge(badge.token, instance.keyring.badge_signing, instance.keyring.badge_kid)
    engine = service.sessions.kw["bind"]
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        statements.append((statement, params))

    event.listen(engine, "before_cursor_execute", record)
    try:
        answer = ask(service, forged)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert (answer.allow, answer.reason) == (False, reason.value)
    pub = instance.keyring.decision_signing.public_key()
    now_ms = int(NOW.timestamp() * 1000)
    assert (
        contract.answer_problem(
            answer, {contract.key_id(pub): pub}, reader="STA-G1-IN", nonce=answer.nonce, now_ms=now_ms
        )
        is None
    )
    assert decision_rows(service)[-1].reason == reason.value  # audited as refused
    # What the token says is never used to look something up: no SELECT carries the forged header's kid.
    kid = parts(forged)[0].get("kid") if forged.count(".") == 2 else None
    if isinstance(kid, str) and kid != instance.keyring.badge_kid:
        lookups = [s for s, p in statements if s.lstrip().upper().startswith("SELECT") and kid in repr(p)]
        assert lookups == []


def _badge_window(token: str) -> tuple[dt.datetime, dt.datetime]:
    claims = parts(token)[1]
    return dt.datetime.fromtimestamp(claims["nbf"], dt.UTC), dt.datetime.fromtimestamp(claims["exp"], dt.UTC)


def test_expired_by_leeway_plus_one_second(world) -> None:  # type: ignore[no-untyped-def]
    service, clock, badge, _ = world
    _, expires = _badge_window(badge.token)
    clock[0] = expires + dt.timedelta(seconds=LEEWAY_S - 1)
    assert ask(service, badge.token).allow  # inside the leeway
    clock[0] = expires + dt.timedelta(seconds=LEEWAY_S + 1)
    answer = ask(service, badge.token)
    assert (answer.allow, answer.reason) == (False, "expired")


def test_not_yet_valid_by_leeway_plus_one_second(world) -> None:  # type: ignore[no-untyped-def]
    service, clock, badge, _ = world
    not_before, _ = _badge_window(badge.token)
    clock[0] = not_before - dt.timedelta(seconds=LEEWAY_S)
    assert ask(service, badge.token).allow
    clock[0] = not_before - dt.timedelta(seconds=LEEWAY_S + 1)
    answer = ask(service, badge.token)
    assert (answer.allow, answer.reason) == (False, "not_yet_valid")


# --- a token of one kind where another is expected -----------------------------------------------------------


def _answer_json(world) -> str:  # type: ignore[no-untyped-def]
    service, _, badge, _ = world
    return ask(service, badge.token).to_json().decode()


def _site_message_json(world) -> str:  # type: ignore[no-untyped-def]
    _, _, _, instance = world
    message = contract.SiteMessage(kind="threat_level", version=1, issued_ms=0, body={"level": "vigilance"}, kid="")
    return contract.sign_site_message(message, instance.keyring.decision_signing).to_json().decode()


def _answer_signature_as_jws(world) -> str:  # type: ignore[no-untyped-def]
    """A signed answer re-dressed as a compact JWS: a genuine decision-key signature, in a badge's clothes."""
    service, _, badge, instance = world
    answer = ask(service, badge.token)
    header = b64(json.dumps({"alg": "EdDSA", "kid": instance.keyring.badge_kid, "typ": "badge"}).encode())
    return f"{header}.{b64(answer.to_json())}.{answer.sig}"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(_answer_json, "token_malformed", id="decision-answer"),
        pytest.param(_site_message_json, "token_malformed", id="site-message"),
        pytest.param(_answer_signature_as_jws, "bad_signature", id="answer-signature-as-badge"),
    ],
)
def test_a_message_shown_as_a_badge_is_refused(world, make, reason: str) -> None:  # type: ignore[no-untyped-def]
    service, _, _, _ = world
    text = make(world)
    if len(text) > contract.MAX_TOKEN_CHARS:  # the contract refuses it before the service sees it
        with pytest.raises(contract.ContractError):
            contract.DecisionRequest.from_json(
                json.dumps({"v": 1, "reader": "STA-G1-IN", "nonce": "0" * 32, "token": text, "sent_ms": 0}).encode()
            )
        return
    answer = ask(service, text)
    assert (answer.allow, answer.reason) == (False, reason)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_badge_is_not_an_api_token(world) -> None:  # type: ignore[no-untyped-def]
    from gateway.web import create_app

    _, _, badge, instance = world
    client = create_app(instance.folder).test_client()
    for path in ("/api/v1/holders", "/api/v1/decisions", f"/api/v1/badges/{badge.id}"):
        response = client.get(path, headers={"Authorization": f"Bearer {badge.token}"})
        assert response.status_code == 401, path


def test_a_badge_is_not_a_decision_answer_nor_a_site_message(world) -> None:  # type: ignore[no-untyped-def]
    _, _, badge, _ = world
    with pytest.raises(contract.ContractError):
        contract.DecisionAnswer.from_json(badge.token.encode())
    with pytest.raises(contract.ContractError):
        contract.SiteMessage.from_json(badge.token.encode())
    with pytest.raises(contract.ContractError):
        contract.DecisionRequest.from_json(badge.token.encode())
