"""Badge tokens: what a genuine token proves, and the reason code for every way a token can fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from gateway.contract import MAX_TOKEN_CHARS
from gateway.core import BadgeClaims, Reason, TokenProblem
from gateway.tokens import QR_MAX_BYTES, BadgeKeys, badge_key_id, fits_qr, issue_token, size_problem, verify_token

ISSUER = "PAR24"
# Fixed keys: the 4-character kids are then known to hold letters (the case tests below need some).
BADGE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
KID = badge_key_id(BADGE_KEY.public_key())
KEYS: BadgeKeys = {KID: BADGE_KEY.public_key()}

CLAIMS: dict[str, Any] = {
    "iss": ISSUER,
    "jti": "B-7f3a9c",
    "sub": "H-1c2d3e",
    "zn": "STADIUM-BOWL STADIUM-CONCOURSE",
    "nbf": 1_721_980_800,
    "exp": 1_722_067_200,
}
HEADERS: dict[str, Any] = {"kid": KID, "typ": "badge"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)])


def signed(
    claims: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
    key: Ed25519PrivateKey = BADGE_KEY,
) -> str:
    """A token signed like issue_token does, with any claims and headers, bypassing issue_token's checks."""
    header = {"alg": "EdDSA", **(HEADERS if headers is None else headers)}
    body = CLAIMS if claims is None else claims
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def issued(**changes: Any) -> str:
    args: dict[str, Any] = {
        "issuer": ISSUER,
        "badge_id": CLAIMS["jti"],
        "holder_id": CLAIMS["sub"],
        "zones": CLAIMS["zn"].split(),
        "not_before": CLAIMS["nbf"],
        "expires": CLAIMS["exp"],
    }
    return issue_token(BADGE_KEY, **{**args, **changes})


def reason_of(token: str, keys: BadgeKeys = KEYS) -> Reason:
    result = verify_token(token, keys, ISSUER)
    assert isinstance(result, TokenProblem), result
    return result.reason


# --- genuine tokens ------------------------------------------------------------------------------------


def test_round_trip() -> None:
    assert verify_token(issued(), KEYS, ISSUER) == BadgeClaims(
        badge_id="B-7f3a9c",
        holder_id="H-1c2d3e",
        zones=frozenset({"STADIUM-BOWL", "STADIUM-CONCOURSE"}),
        not_before=1_721_980_800,
        expires=1_722_067_200,
        kid=KID,
    )


def test_round_trip_with_several_accepted_keys() -> None:
    keys = {badge_key_id(OTHER_KEY.public_key()): OTHER_KEY.public_key(), **KEYS}
    assert isinstance(verify_token(issued(), keys, ISSUER), BadgeClaims)


def test_issued_token_carries_only_the_badge_claims() -> None:
    payload = jwt.decode(issued(), BADGE_KEY.public_key(), algorithms=["EdDSA"], options={"verify_exp": False})
    assert set(payload) == {"iss", "jti", "sub", "zn", "nbf", "exp"}


def test_issued_zones_are_sorted_and_unique() -> None:
    token = issued(zones=["STADIUM-FIELD", "STADIUM-BOWL", "STADIUM-FIELD"])
    payload = jwt.decode(token, BADGE_KEY.public_key(), algorithms=["EdDSA"], options={"verify_exp": False})
    assert payload["zn"] == "STADIUM-BOWL STADIUM-FIELD"


def test_issued_header_names_key_and_type() -> None:
    header = jwt.get_unverified_header(issued())
    assert (header["alg"], header["kid"], header["typ"]) == ("EdDSA", KID, "badge")


def test_validity_window_is_not_judged_here() -> None:
    """An expired token still verifies: the decision core judges the window with its `now`."""
    assert isinstance(verify_token(issued(not_before=1, expires=2), KEYS, ISSUER), BadgeClaims)


def test_empty_zone_list_reads_as_no_zone() -> None:
    claims = verify_token(issued(zones=[]), KEYS, ISSUER)
    assert isinstance(claims, BadgeClaims) and claims.zones == frozenset()


def test_badge_codes_read_back_as_zone_codes() -> None:
    """Short badge codes keep the QR small; the site's table reads them back as zones; unknown ones stay."""
    token = issued(zones=["P", "C", "STADIUM-VIP", "X"])
    table = {"P": "STADIUM-PERIMETER", "C": "STADIUM-CONCOURSE", "STADIUM-VIP": "STADIUM-VIP"}
    claims = verify_token(token, KEYS, ISSUER, table)
    assert isinstance(claims, BadgeClaims)
    assert claims.zones == {"STADIUM-PERIMETER", "STADIUM-CONCOURSE", "STADIUM-VIP", "X"}


def test_kid_is_four_characters_of_the_thumbprint() -> None:
    assert len(KID) == 4 and badge_key_id(OTHER_KEY.public_key()) != KID


@pytest.mark.parametrize("zones", [["P"], ["P", "C", "B", "F", "V", "O", "S", "L"]])
def test_badge_fits_a_version_12_qr_code(zones: list[str]) -> None:
    import qrcode

    token = issue_token(
        BADGE_KEY,
        issuer=ISSUER,
        badge_id="AbCdEf_-",
        holder_id="-_fEdCbA",
        zones=zones,
        not_before=1_721_433_600,
        expires=1_723_420_800,
    )
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(token.encode(), optimize=0)
    code.make(fit=True)
    assert fits_qr(token) and size_problem(ISSUER, zones) is None
    assert code.version <= 12, (len(token), code.version)


def test_too_many_long_zone_codes_do_not_fit() -> None:
    zones = ["STADIUM-PERIMETER", "STADIUM-CONCOURSE", "STADIUM-BOWL"]
    problem = size_problem(ISSUER, zones)
    assert problem is not None and "too long for a version 12 QR code" in problem
    assert len(issued(zones=zones)) > QR_MAX_BYTES


# --- signature, key, type, issuer ----------------------------------------------------------------------


def test_wrong_key_is_bad_signature() -> None:
    assert reason_of(signed(key=OTHER_KEY)) == Reason.BAD_SIGNATURE  # OTHER_KEY's signature under our kid


def test_tampered_payload_is_bad_signature() -> None:
    header, _, signature = issued().split(".")
    forged = {**CLAIMS, "zn": CLAIMS["zn"] + " STADIUM-FIELD"}
    assert reason_of(f"{header}.{b64(json.dumps(forged).encode())}.{signature}") == Reason.BAD_SIGNATURE


def test_tampered_signature_is_bad_signature() -> None:
    header, payload, signature = issued().split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[0] ^= 1
    assert reason_of(f"{header}.{payload}.{b64(bytes(raw))}") == Reason.BAD_SIGNATURE


def test_key_of_another_issuer_is_unknown_kid() -> None:
    other = issue_token(
        OTHER_KEY, issuer=ISSUER, badge_id="B-0001", holder_id="H-0001", zones=[], not_before=0, expires=1
    )
    assert reason_of(other) == Reason.UNKNOWN_KID


def test_no_accepted_keys_is_unknown_kid() -> None:
    assert reason_of(issued(), keys={}) == Reason.UNKNOWN_KID


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"typ": "badge"}, id="missing-kid"),
        pytest.param({"kid": "", "typ": "badge"}, id="empty-kid"),
        pytest.param({"kid": KID.swapcase(), "typ": "badge"}, id="other-case"),
        pytest.param({"kid": "../../etc/passwd", "typ": "badge"}, id="path-kid"),
    ],
)
def test_unknown_kid(headers: dict[str, Any]) -> None:
    assert reason_of(signed(headers=headers)) == Reason.UNKNOWN_KID


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"kid": KID, "typ": "JWT"}, id="jwt"),
        pytest.param({"kid": KID, "typ": "Badge"}, id="other-case"),
        pytest.param({"kid": KID, "typ": "decision"}, id="other-type"),
        pytest.param({"kid": KID}, id="missing"),
    ],
)
def test_wrong_typ(headers: dict[str, Any]) -> None:
    assert reason_of(signed(headers=headers)) == Reason.WRONG_TYP


@pytest.mark.parametrize(
    "issuer",
    [pytest.param("OTHER", id="other"), pytest.param("par24", id="case"), pytest.param("", id="empty")],
)
def test_wrong_issuer(issuer: str) -> None:
    assert reason_of(issued(issuer=issuer)) == Reason.WRONG_ISSUER


def test_non_string_issuer_is_wrong_issuer() -> None:
    assert reason_of(signed({**CLAIMS, "iss": ["PAR24"]})) == Reason.WRONG_ISSUER


# --- algorithm confusion -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_bad_signature(alg: str) -> None:
    assert reason_of(compact({"alg": alg, **HEADERS}, CLAIMS)) == Reason.BAD_SIGNATURE


def test_missing_alg_is_bad_signature() -> None:
    assert reason_of(compact(HEADERS, CLAIMS, b"x" * 64)) == Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(
            BADGE_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
            id="raw",
        ),
        pytest.param(
            BADGE_KEY.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            id="pem",
        ),
    ],
)
def test_hs256_signed_with_the_public_key_is_bad_signature(secret: bytes) -> None:
    header = b64(json.dumps({"alg": "HS256", **HEADERS}).encode())
    payload = b64(json.dumps(CLAIMS).encode())
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert reason_of(f"{header}.{payload}.{b64(mac)}") == Reason.BAD_SIGNATURE


@pytest.mark.parametrize("alg", ["ES256", "RS256", "Ed25519"])
def test_other_algorithms_are_bad_signature(alg: str) -> None:
    assert reason_of(compact({"alg": alg, **HEADERS}, CLAIMS, b"x" * 64)) == Reason.BAD_SIGNATURE


# --- malformed -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({**HEADERS, "crit": ["b64"], "b64": True}, id="crit-pyjwt-knows"),
        pytest.param({**HEADERS, "crit": ["exp"], "exp": 1}, id="crit-unsupported"),
        pytest.param({**HEADERS, "crit": "b64"}, id="crit-not-a-list"),
        pytest.param({**HEADERS, "crit": []}, id="crit-empty"),
    ],
)
def test_crit_header_is_malformed(headers: dict[str, Any]) -> None:
    assert reason_of(signed(headers=headers)) == Reason.TOKEN_MALFORMED


@pytest.mark.parametrize("kid", [1, None, ["k"], {"k": 1}])
def test_non_string_kid_is_malformed(kid: Any) -> None:
    assert reason_of(signed(headers={"kid": kid, "typ": "badge"})) == Reason.TOKEN_MALFORMED


@pytest.mark.parametrize("claim", sorted(CLAIMS))
def test_missing_claim_is_malformed(claim: str) -> None:
    assert reason_of(signed({k: v for k, v in CLAIMS.items() if k != claim})) == Reason.TOKEN_MALFORMED


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        pytest.param("exp", "1722067200", id="exp-string"),
        pytest.param("exp", 1722067200.5, id="exp-float"),
        pytest.param("exp", True, id="exp-bool"),
        pytest.param("exp", None, id="exp-null"),
        pytest.param("nbf", [1], id="nbf-list"),
        pytest.param("nbf", False, id="nbf-bool"),
        pytest.param("zn", ["STADIUM-BOWL"], id="zn-list"),
        pytest.param("zn", 1, id="zn-number"),
        pytest.param("zn", "STADIUM-BOWL  STADIUM-VIP", id="zn-two-spaces"),
        pytest.param("zn", " STADIUM-BOWL", id="zn-leading-space"),
        pytest.param("zn", "STADIUM-BOWL\n", id="zn-newline"),
        pytest.param("zn", "STADIUM-BOWL,STADIUM-VIP", id="zn-comma"),
        pytest.param("zn", {"STADIUM-BOWL": True}, id="zn-mapping"),
        pytest.param("zn", None, id="zn-null"),
        pytest.param("jti", "B1", id="jti-short"),
        pytest.param("jti", "B-0001\n", id="jti-newline"),
        pytest.param("jti", 12345, id="jti-number"),
        pytest.param("jti", "B/0001", id="jti-slash"),
        pytest.param("sub", "x" * 41, id="sub-long"),
        pytest.param("sub", 12345, id="sub-number"),
        pytest.param("sub", "Jean Dupont", id="sub-name"),
    ],
)
def test_bad_claim_is_malformed(claim: str, value: Any) -> None:
    assert reason_of(signed({**CLAIMS, claim: value})) == Reason.TOKEN_MALFORMED


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("hello", id="word"),
        pytest.param("a.b", id="two-parts"),
        pytest.param("a.b.c", id="three-junk-parts"),
        pytest.param("a.b.c.d", id="four-parts"),
        pytest.param("..", id="dots"),
        pytest.param("é.é.é", id="non-ascii"),
        pytest.param("!!!!.!!!!.!!!!", id="non-base64"),
        pytest.param(f"{b64(b'[1]')}.{b64(b'{}')}.", id="header-not-an-object"),
        pytest.param(f"{b64(b'{')}.{b64(b'{}')}.", id="header-not-json"),
        pytest.param("WIFI:S:event;T:WPA;P:secret;;", id="someone-elses-qr"),
        pytest.param("https://example.org/badge?id=1.2.3", id="url"),
        pytest.param("x" * (MAX_TOKEN_CHARS + 1) + "..", id="oversized"),
        pytest.param(" " + "x.y.z", id="leading-space"),
    ],
)
def test_garbage_is_malformed(token: str) -> None:
    assert reason_of(token) == Reason.TOKEN_MALFORMED


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b"7", id="number"),
    ],
)
def test_signed_payload_that_is_not_an_object_is_malformed(payload: bytes) -> None:
    signing_input = f"{b64(json.dumps({'alg': 'EdDSA', **HEADERS}).encode())}.{b64(payload)}"
    token = f"{signing_input}.{b64(BADGE_KEY.sign(signing_input.encode()))}"
    assert reason_of(token) == Reason.TOKEN_MALFORMED


def test_genuine_but_oversized_token_is_malformed() -> None:
    token = issued(zones=[f"ZONE-{i:04d}" for i in range(100)])
    assert len(token) > MAX_TOKEN_CHARS
    assert reason_of(token) == Reason.TOKEN_MALFORMED


@pytest.mark.parametrize("token", [None, b"a.b.c", 123])
def test_non_string_is_malformed(token: Any) -> None:
    assert reason_of(token) == Reason.TOKEN_MALFORMED


# --- never raises --------------------------------------------------------------------------------------

_B64URL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_HEADER_VALUES = st.one_of(st.just("EdDSA"), st.just(KID), st.just("badge"), _JSON)
_HEADER = st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "b64", "jku", "x5u"]), _HEADER_VALUES)


@given(st.text(max_size=200))
def test_never_raises_for_any_text(token: str) -> None:
    assert isinstance(verify_token(token, KEYS, ISSUER), BadgeClaims | TokenProblem)


@given(st.text(max_size=60), st.text(max_size=60), st.text(max_size=60))
def test_never_raises_for_any_three_part_string(a: str, b: str, c: str) -> None:
    assert isinstance(verify_token(f"{a}.{b}.{c}", KEYS, ISSUER), BadgeClaims | TokenProblem)


@given(_B64URL, _B64URL, _B64URL)
def test_never_raises_for_three_base64url_parts(a: str, b: str, c: str) -> None:
    assert isinstance(verify_token(f"{a}.{b}.{c}", KEYS, ISSUER), BadgeClaims | TokenProblem)


@given(_HEADER, _JSON, st.binary(max_size=70))
def test_never_raises_for_any_json_header_and_payload(header: dict[str, Any], payload: Any, sig: bytes) -> None:
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(sig)}"
    assert isinstance(verify_token(token, KEYS, ISSUER), BadgeClaims | TokenProblem)


@given(_JSON)
def test_never_raises_for_any_genuinely_signed_payload(payload: Any) -> None:
    signing_input = f"{b64(json.dumps({'alg': 'EdDSA', **HEADERS}).encode())}.{b64(json.dumps(payload).encode())}"
    token = f"{signing_input}.{b64(BADGE_KEY.sign(signing_input.encode()))}"
    assert isinstance(verify_token(token, KEYS, ISSUER), BadgeClaims | TokenProblem)
