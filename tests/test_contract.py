"""The wire contract: round trips, strict parsing, and decision signatures."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from gateway.contract import (
    ANSWER_TTL_MS,
    MAX_PAYLOAD_BYTES,
    MAX_TOKEN_CHARS,
    ContractError,
    DecisionAnswer,
    DecisionKeys,
    DecisionRequest,
    GateEvent,
    answer_problem,
    answer_topic,
    b64url,
    gate_command_topic,
    gate_event_topic,
    key_id,
    public_key_from_pem,
    reader_from_request_topic,
    request_topic,
    sign_answer,
)

NONCE = "0123456789abcdef0123456789abcdef"
OTHER_NONCE = "fedcba9876543210fedcba9876543210"
DECIDED_MS = 1_722_016_800_000
DECISION_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
KEYS: DecisionKeys = {key_id(DECISION_KEY.public_key()): DECISION_KEY.public_key()}

REQUEST = DecisionRequest(reader="STA-G3-IN", nonce=NONCE, token="aaa.bbb.ccc", sent_ms=DECIDED_MS - 40)
ANSWER = DecisionAnswer(
    reader="STA-G3-IN",
    gate="STA-G3",
    nonce=NONCE,
    allow=True,
    reason="granted",
    badge="B-7f3a9c",
    decided_ms=DECIDED_MS,
    expires_ms=DECIDED_MS + ANSWER_TTL_MS,
    kid="",
)
SIGNED = sign_answer(ANSWER, DECISION_KEY)
EVENT = GateEvent(gate="STA-G3", kind="passage", seq=42, at_ms=DECIDED_MS + 1200, nonce=NONCE)


def as_dict(message: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(message.to_json())
    return data


def encode(data: Any) -> bytes:
    return json.dumps(data).encode()


# --- round trips ---------------------------------------------------------------------------------------


def test_request_round_trip() -> None:
    assert DecisionRequest.from_json(REQUEST.to_json()) == REQUEST


def test_answer_round_trip() -> None:
    assert DecisionAnswer.from_json(SIGNED.to_json()) == SIGNED


def test_answer_round_trip_for_unknown_reader() -> None:
    denial = sign_answer(
        dataclasses.replace(ANSWER, gate="", allow=False, reason="unknown_reader", badge=""), OTHER_KEY
    )
    assert DecisionAnswer.from_json(denial.to_json()) == denial


@pytest.mark.parametrize("event", [EVENT, dataclasses.replace(EVENT, kind="door_forced", nonce="")])
def test_gate_event_round_trip(event: GateEvent) -> None:
    assert GateEvent.from_json(event.to_json()) == event


@pytest.mark.parametrize("message", [REQUEST, SIGNED, EVENT])
def test_messages_carry_version_1(message: Any) -> None:
    assert as_dict(message)["v"] == 1


def test_request_with_longest_token_fits_the_payload_limit() -> None:
    request = dataclasses.replace(REQUEST, token="x" * MAX_TOKEN_CHARS, reader="R" * 48)
    assert len(request.to_json()) <= MAX_PAYLOAD_BYTES
    assert DecisionRequest.from_json(request.to_json()) == request


# --- strict parsing ------------------------------------------------------------------------------------

Edit = Callable[[dict[str, Any]], Any]


def put(key: str, value: Any) -> Edit:
    return lambda d: {**d, key: value}


def drop(key: str) -> Edit:
    return lambda d: {k: v for k, v in d.items() if k != key}


def _common_cases(fields: list[str]) -> list[Any]:
    return [
        pytest.param(put("extra", 1), "unknown field", id="unknown-field"),
        pytest.param(put("V", 1), "unknown field", id="unknown-field-case"),
        *[pytest.param(drop(f), "missing field", id=f"missing-{f}") for f in fields],
        pytest.param(drop("v"), "unsupported version", id="missing-version"),
        pytest.param(put("v", 2), "unsupported version", id="version-2"),
        pytest.param(put("v", 0), "unsupported version", id="version-0"),
        pytest.param(put("v", "1"), "unsupported version", id="version-string"),
        pytest.param(put("v", True), "unsupported version", id="version-true"),
        pytest.param(put("v", None), "unsupported version", id="version-null"),
        pytest.param(lambda d: [d], "expected a JSON object", id="array"),
        pytest.param(lambda d: "text", "expected a JSON object", id="string"),
        pytest.param(lambda d: 1, "expected a JSON object", id="number"),
        pytest.param(lambda d: None, "expected a JSON object", id="null"),
    ]


REQUEST_CASES = [
    *_common_cases(["reader", "nonce", "token", "sent_ms"]),
    pytest.param(put("reader", ""), "reader", id="reader-empty"),
    pytest.param(put("reader", "STA/G3"), "reader", id="reader-slash"),
    pytest.param(put("reader", "+"), "reader", id="reader-wildcard"),
    pytest.param(put("reader", "STA-G3-IN\n"), "reader", id="reader-newline"),
    pytest.param(put("reader", "R" * 49), "reader", id="reader-long"),
    pytest.param(put("reader", 7), "reader", id="reader-number"),
    pytest.param(put("nonce", NONCE.upper()), "nonce", id="nonce-uppercase"),
    pytest.param(put("nonce", NONCE[:-1]), "nonce", id="nonce-short"),
    pytest.param(put("nonce", NONCE + "0"), "nonce", id="nonce-long"),
    pytest.param(put("nonce", NONCE[:-1] + "g"), "nonce", id="nonce-not-hex"),
    pytest.param(put("nonce", NONCE + "\n"), "nonce", id="nonce-newline"),
    pytest.param(put("nonce", ""), "nonce", id="nonce-empty"),
    pytest.param(put("nonce", int(NONCE, 16)), "nonce", id="nonce-number"),
    pytest.param(put("token", ""), "token", id="token-empty"),
    pytest.param(put("token", "x" * (MAX_TOKEN_CHARS + 1)), "token", id="token-long"),
    pytest.param(put("token", ["a", "b"]), "token", id="token-list"),
    pytest.param(put("token", None), "token", id="token-null"),
    pytest.param(put("sent_ms", -1), "sent_ms", id="sent-negative"),
    pytest.param(put("sent_ms", 1.5), "sent_ms", id="sent-float"),
    pytest.param(put("sent_ms", True), "sent_ms", id="sent-bool"),
    pytest.param(put("sent_ms", "1722016800000"), "sent_ms", id="sent-string"),
    pytest.param(put("sent_ms", 2**53), "sent_ms", id="sent-huge"),
]

ANSWER_CASES = [
    *_common_cases(
        ["reader", "gate", "nonce", "allow", "reason", "badge", "decided_ms", "expires_ms", "kid", "sig"]
    ),
    pytest.param(put("allow", 1), "allow", id="allow-number"),
    pytest.param(put("allow", "true"), "allow", id="allow-string"),
    pytest.param(put("allow", None), "allow", id="allow-null"),
    pytest.param(put("reader", "a b"), "reader", id="reader-space"),
    pytest.param(put("gate", "STA/G3"), "gate", id="gate-slash"),
    pytest.param(put("gate", None), "gate", id="gate-null"),
    pytest.param(put("nonce", NONCE + "\n"), "nonce", id="nonce-newline"),
    pytest.param(put("reason", "Granted"), "reason", id="reason-capital"),
    pytest.param(put("reason", ""), "reason", id="reason-empty"),
    pytest.param(put("reason", "granted\n"), "reason", id="reason-newline"),
    pytest.param(put("reason", 0), "reason", id="reason-number"),
    pytest.param(put("badge", "b" * 65), "badge", id="badge-long"),
    pytest.param(put("badge", None), "badge", id="badge-null"),
    pytest.param(put("decided_ms", -5), "decided_ms", id="decided-negative"),
    pytest.param(put("expires_ms", "soon"), "expires_ms", id="expires-string"),
    pytest.param(put("kid", ""), "kid", id="kid-empty"),
    pytest.param(put("kid", "k/1"), "kid", id="kid-slash"),
    pytest.param(put("kid", "k" * 65), "kid", id="kid-long"),
    pytest.param(put("sig", ""), "sig", id="sig-empty"),
    pytest.param(put("sig", SIGNED.sig[:-1]), "sig", id="sig-short"),
    pytest.param(put("sig", SIGNED.sig + "A"), "sig", id="sig-long"),
    pytest.param(put("sig", SIGNED.sig + "\n"), "sig", id="sig-newline"),
    pytest.param(put("sig", SIGNED.sig[:-2] + "=="), "sig", id="sig-padding"),
]

EVENT_CASES = [
    *_common_cases(["gate", "kind", "seq", "at_ms", "nonce"]),
    pytest.param(put("kind", "exploded"), "kind", id="kind-unknown"),
    pytest.param(put("kind", "PASSAGE"), "kind", id="kind-case"),
    pytest.param(put("kind", ["passage"]), "kind", id="kind-list"),
    pytest.param(put("gate", ""), "gate", id="gate-empty"),
    pytest.param(put("seq", -1), "seq", id="seq-negative"),
    pytest.param(put("seq", 1.0), "seq", id="seq-float"),
    pytest.param(put("at_ms", False), "at_ms", id="at-bool"),
    pytest.param(put("nonce", "abc"), "nonce", id="nonce-short"),
    pytest.param(put("nonce", None), "nonce", id="nonce-null"),
]


@pytest.mark.parametrize(("edit", "fragment"), REQUEST_CASES)
def test_request_refused(edit: Edit, fragment: str) -> None:
    with pytest.raises(ContractError, match=fragment):
        DecisionRequest.from_json(encode(edit(as_dict(REQUEST))))


@pytest.mark.parametrize(("edit", "fragment"), ANSWER_CASES)
def test_answer_refused(edit: Edit, fragment: str) -> None:
    with pytest.raises(ContractError, match=fragment):
        DecisionAnswer.from_json(encode(edit(as_dict(SIGNED))))


@pytest.mark.parametrize(("edit", "fragment"), EVENT_CASES)
def test_gate_event_refused(edit: Edit, fragment: str) -> None:
    with pytest.raises(ContractError, match=fragment):
        GateEvent.from_json(encode(edit(as_dict(EVENT))))


PARSERS = [
    pytest.param(DecisionRequest.from_json, id="request"),
    pytest.param(DecisionAnswer.from_json, id="answer"),
    pytest.param(GateEvent.from_json, id="event"),
]


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        pytest.param(b"", "not UTF-8 JSON", id="empty"),
        pytest.param(b"hello", "not UTF-8 JSON", id="not-json"),
        pytest.param(b'{"v": 1,', "not UTF-8 JSON", id="truncated"),
        pytest.param(b"\xff\xfe{}", "not UTF-8 JSON", id="not-utf8"),
        pytest.param(b'{"v": 1, "v": 1', "not UTF-8 JSON", id="unterminated"),
        pytest.param(b"[" * 4000 + b"]" * 4000, "exceeds", id="deep-and-oversized"),
        pytest.param(b"[" * 3000, "not UTF-8 JSON", id="deeply-nested"),
        pytest.param(b'{"v": 1, "reader": ' + b"[" * 3000, "not UTF-8 JSON", id="deeply-nested-field"),
        pytest.param(b" " * MAX_PAYLOAD_BYTES + b"{}", "exceeds", id="oversized"),
        pytest.param(b"[]", "expected a JSON object", id="array"),
        pytest.param(b'"x"', "expected a JSON object", id="string"),
        pytest.param(b"null", "expected a JSON object", id="null"),
        pytest.param(b"{}", "unsupported version", id="empty-object"),
    ],
)
def test_bytes_refused(parse: Callable[[bytes], Any], payload: bytes, fragment: str) -> None:
    # Earlier tests' garbage is collected first: a finalizer that warns while the parser is at the recursion limit
    # cannot even be reported (pytest's hook itself hits the limit) and fails this test instead of its own.
    gc.collect()
    with pytest.raises(ContractError, match=fragment):
        parse(payload)


def test_oversized_but_otherwise_valid_request_is_refused() -> None:
    payload = REQUEST.to_json()[:-1] + b" " * MAX_PAYLOAD_BYTES + b"}"
    with pytest.raises(ContractError, match="exceeds"):
        DecisionRequest.from_json(payload)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=20,
)


def _parses_or_refuses(parse: Callable[[bytes], Any], payload: bytes) -> None:
    """Any exception but ContractError propagates and fails the test."""
    with contextlib.suppress(ContractError):
        parse(payload)


@given(st.binary(max_size=MAX_PAYLOAD_BYTES + 64))
def test_request_parser_returns_or_raises_contract_error_for_any_bytes(payload: bytes) -> None:
    _parses_or_refuses(DecisionRequest.from_json, payload)


@pytest.mark.parametrize("parse", PARSERS)
@given(payload=st.binary(max_size=512))
def test_every_parser_returns_or_raises_contract_error_for_any_bytes(
    parse: Callable[[bytes], Any], payload: bytes
) -> None:
    _parses_or_refuses(parse, payload)


@pytest.mark.parametrize(
    ("parse", "base"),
    [
        pytest.param(DecisionRequest.from_json, as_dict(REQUEST), id="request"),
        pytest.param(DecisionAnswer.from_json, as_dict(SIGNED), id="answer"),
        pytest.param(GateEvent.from_json, as_dict(EVENT), id="event"),
    ],
)
@given(data=st.data(), value=_JSON)
def test_every_parser_returns_or_raises_contract_error_for_any_json(
    parse: Callable[[bytes], Any], base: dict[str, Any], data: st.DataObject, value: Any
) -> None:
    """A valid message with one field (or an extra one) set to any JSON value."""
    target = data.draw(st.sampled_from([*sorted(base), "extra"]))
    _parses_or_refuses(parse, json.dumps({**base, target: value}).encode())


# --- signatures ----------------------------------------------------------------------------------------


def check(answer: DecisionAnswer, **overrides: Any) -> str | None:
    expected: dict[str, Any] = {
        "reader": "STA-G3-IN",
        "nonce": NONCE,
        "now_ms": DECIDED_MS + 100,
        "gate": None,
    }
    return answer_problem(answer, KEYS, **{**expected, **overrides})


def test_sign_answer_sets_kid_and_signature() -> None:
    assert (SIGNED.kid, len(SIGNED.sig)) == (key_id(DECISION_KEY.public_key()), 86)


def test_genuine_answer_passes() -> None:
    assert check(SIGNED) is None


def test_genuine_answer_passes_after_the_wire() -> None:
    assert check(DecisionAnswer.from_json(SIGNED.to_json())) is None


def test_genuine_answer_passes_the_gate_check() -> None:
    assert check(SIGNED, gate="STA-G3") is None


def test_genuine_answer_passes_when_the_caller_checks_reader_and_nonce_itself() -> None:
    assert check(SIGNED, reader=None, nonce=None) is None


def test_signing_ignores_the_kid_and_sig_given() -> None:
    resigned = sign_answer(dataclasses.replace(ANSWER, kid="someone-else", sig="x" * 86), DECISION_KEY)
    assert check(resigned) is None


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"allow": False}, id="allow"),
        pytest.param({"reason": "revoked"}, id="reason"),
        pytest.param({"badge": "B-000000"}, id="badge"),
        pytest.param({"decided_ms": DECIDED_MS + 1}, id="decided_ms"),
        pytest.param({"expires_ms": DECIDED_MS + 60_000}, id="expires_ms"),
        pytest.param({"reader": "STA-G3-OUT"}, id="reader"),
        pytest.param({"gate": "STA-G4"}, id="gate"),
        pytest.param({"nonce": OTHER_NONCE}, id="nonce"),
    ],
)
def test_tampered_field_is_a_bad_signature(changes: dict[str, Any]) -> None:
    tampered = dataclasses.replace(SIGNED, **changes)
    assert check(tampered, reader=None, nonce=None) == "bad signature"


def test_denial_turned_into_grant_is_a_bad_signature() -> None:
    denial = sign_answer(dataclasses.replace(ANSWER, allow=False, reason="revoked"), DECISION_KEY)
    assert check(dataclasses.replace(denial, allow=True, reason="granted")) == "bad signature"


@pytest.mark.parametrize(
    "sig",
    [
        pytest.param("A" * 86, id="zeros"),
        pytest.param(SIGNED.sig[1:] + SIGNED.sig[0], id="rotated"),
        pytest.param("", id="empty"),
        pytest.param("é" * 86, id="non-ascii"),
        pytest.param("A", id="bad-length"),
    ],
)
def test_tampered_signature_is_a_bad_signature(sig: str) -> None:
    assert check(dataclasses.replace(SIGNED, sig=sig)) == "bad signature"


def test_wrong_key_under_our_kid_is_a_bad_signature() -> None:
    unsigned = dataclasses.replace(ANSWER, kid=SIGNED.kid)
    forged = dataclasses.replace(unsigned, sig=b64url(OTHER_KEY.sign(unsigned.signing_bytes())))
    assert check(forged) == "bad signature"


def test_unknown_kid_is_reported() -> None:
    problem = check(sign_answer(ANSWER, OTHER_KEY))
    assert problem is not None and problem.startswith("unknown decision key")


def test_no_keys_is_unknown_kid() -> None:
    problem = answer_problem(SIGNED, {}, reader="STA-G3-IN", nonce=NONCE, now_ms=DECIDED_MS)
    assert problem is not None and problem.startswith("unknown decision key")


def test_answer_for_another_reader_is_reported() -> None:
    problem = check(sign_answer(dataclasses.replace(ANSWER, reader="STA-G3-OUT"), DECISION_KEY))
    assert problem is not None and problem.startswith("answer is for reader 'STA-G3-OUT'")


def test_answer_for_another_gate_is_reported() -> None:
    problem = check(sign_answer(dataclasses.replace(ANSWER, gate="STA-G4"), DECISION_KEY), gate="STA-G3")
    assert problem is not None and problem.startswith("answer is for gate 'STA-G4'")


def test_answer_for_another_nonce_is_reported() -> None:
    problem = check(sign_answer(dataclasses.replace(ANSWER, nonce=OTHER_NONCE), DECISION_KEY))
    assert problem == "answer is not for the pending request"


def test_answer_is_good_until_its_last_millisecond() -> None:
    assert check(SIGNED, now_ms=DECIDED_MS + ANSWER_TTL_MS - 1) is None


@pytest.mark.parametrize(
    "now_ms",
    [
        pytest.param(DECIDED_MS + ANSWER_TTL_MS, id="at-expiry"),
        pytest.param(DECIDED_MS + ANSWER_TTL_MS + 60_000, id="a-minute-late"),
    ],
)
def test_expired_answer_is_reported(now_ms: int) -> None:
    problem = check(SIGNED, now_ms=now_ms)
    assert problem is not None and problem.startswith("answer expired")


def test_signing_bytes_are_domain_separated() -> None:
    assert SIGNED.signing_bytes().startswith(b"acs-decision-v1\n")


def test_signing_bytes_do_not_cover_the_signature() -> None:
    assert SIGNED.signing_bytes() == dataclasses.replace(SIGNED, sig="").signing_bytes()


# --- keys and topics -----------------------------------------------------------------------------------


def test_key_id_is_stable_for_a_key() -> None:
    raw = DECISION_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(Ed25519PublicKey.from_public_bytes(raw)) == key_id(DECISION_KEY.public_key())


def test_key_ids_differ_between_keys() -> None:
    assert key_id(DECISION_KEY.public_key()) != key_id(OTHER_KEY.public_key())


def test_public_key_from_pem_round_trip() -> None:
    pem = DECISION_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_id(public_key_from_pem(pem)) == key_id(DECISION_KEY.public_key())


def test_public_key_from_pem_refuses_other_key_types() -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ContractError, match="Ed25519"):
        public_key_from_pem(pem)


def test_topics() -> None:
    assert (request_topic("R1"), answer_topic("R1"), gate_command_topic("G1"), gate_event_topic("G1")) == (
        "acs/v1/readers/R1/request",
        "acs/v1/readers/R1/answer",
        "acs/v1/gates/G1/command",
        "acs/v1/gates/G1/event",
    )


def test_reader_from_request_topic_round_trip() -> None:
    assert reader_from_request_topic(request_topic("STA-G3-IN")) == "STA-G3-IN"


@pytest.mark.parametrize(
    "topic",
    [
        "acs/v1/readers/STA-G3-IN/answer",
        "acs/v1/readers/STA-G3-IN/request/extra",
        "acs/v2/readers/STA-G3-IN/request",
        "acs/v1/gates/STA-G3/request",
        "acs/v1/readers//request",
        "acs/v1/readers/+/request",
        "acs/v1/readers/a b/request",
        "",
    ],
)
def test_reader_from_request_topic_refuses(topic: str) -> None:
    with pytest.raises(ContractError):
        reader_from_request_topic(topic)
