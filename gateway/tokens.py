"""Badge tokens: compact EdDSA JWTs carried in the QR code.

Issuing needs the gateway's private badge key; verifying needs only the accepted public keys, so readers use
this module offline too. Verification checks what a key can prove (algorithm, `kid`, signature, `typ`,
issuer, claim shapes). The validity window is judged by the decision core, which is given `now`.
No I/O and no clock here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.contract import MAX_TOKEN_CHARS, key_id
from gateway.core import BadgeClaims, Reason, TokenProblem

BADGE_TYP = "badge"
ALGORITHM = "EdDSA"
_ID = re.compile(r"^[A-Za-z0-9_-]{4,40}\Z")
_ZONE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}\Z")
_CLAIMS = {"iss", "jti", "sub", "zn", "nbf", "exp"}

BadgeKeys = Mapping[str, Ed25519PublicKey]  # kid -> accepted public key


def issue_token(
    private_key: Ed25519PrivateKey,
    *,
    issuer: str,
    badge_id: str,
    holder_id: str,
    zones: Iterable[str],
    not_before: int,
    expires: int,
) -> str:
    """Sign a badge. Only opaque ids, zone codes and the validity window: no personal data in the QR."""
    claims = {
        "iss": issuer,
        "jti": badge_id,
        "sub": holder_id,
        "zn": sorted(set(zones)),
        "nbf": not_before,
        "exp": expires,
    }
    headers = {"kid": key_id(private_key.public_key()), "typ": BADGE_TYP}
    return jwt.encode(claims, private_key, algorithm=ALGORITHM, headers=headers)


def verify_token(token: str, keys: BadgeKeys, issuer: str) -> BadgeClaims | TokenProblem:
    """What the token proves, or the problem that stops it proving anything."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        return TokenProblem(Reason.TOKEN_MALFORMED, "not a compact JWT")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:  # DecodeError, and InvalidTokenError for a non-string kid or a bad crit
        return TokenProblem(Reason.TOKEN_MALFORMED, f"unreadable header: {exc}")
    if header.get("alg") != ALGORITHM:
        return TokenProblem(
            Reason.BAD_SIGNATURE, f"algorithm {str(header.get('alg'))[:20]!r} is not accepted"
        )
    if "crit" in header:
        return TokenProblem(Reason.TOKEN_MALFORMED, "critical header extensions are not supported")
    kid = header.get("kid")
    # The kid is only ever a dictionary key here: it never names a file or a database row.
    if not isinstance(kid, str) or kid not in keys:
        return TokenProblem(Reason.UNKNOWN_KID, f"key id {str(kid)[:40]!r} is not accepted")
    if header.get("typ") != BADGE_TYP:
        return TokenProblem(Reason.WRONG_TYP, f"typ {str(header.get('typ'))[:20]!r} is not a badge")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            keys[kid],
            algorithms=[ALGORITHM],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
        )
    except jwt.InvalidSignatureError:
        return TokenProblem(Reason.BAD_SIGNATURE, "signature does not verify")
    except jwt.PyJWTError as exc:
        return TokenProblem(Reason.TOKEN_MALFORMED, f"undecodable: {exc}")
    return _claims(claims, kid, issuer)


def _claims(claims: dict[str, Any], kid: str, issuer: str) -> BadgeClaims | TokenProblem:
    missing = _CLAIMS - set(claims)
    if missing:
        return TokenProblem(Reason.TOKEN_MALFORMED, f"missing claim(s): {', '.join(sorted(missing))}")
    if claims["iss"] != issuer:
        return TokenProblem(Reason.WRONG_ISSUER, f"issuer {str(claims['iss'])[:40]!r} is not {issuer!r}")
    jti, sub, zones = claims["jti"], claims["sub"], claims["zn"]
    if not isinstance(jti, str) or not _ID.match(jti):
        return TokenProblem(Reason.TOKEN_MALFORMED, "jti is not a badge id")
    if not isinstance(sub, str) or not _ID.match(sub):
        return TokenProblem(Reason.TOKEN_MALFORMED, "sub is not a holder id")
    if not isinstance(zones, list) or not all(isinstance(z, str) and _ZONE.match(z) for z in zones):
        return TokenProblem(Reason.TOKEN_MALFORMED, "zn is not a list of zone codes")
    for name in ("nbf", "exp"):
        if isinstance(claims[name], bool) or not isinstance(claims[name], int):
            return TokenProblem(Reason.TOKEN_MALFORMED, f"{name} is not an integer time")
    return BadgeClaims(
        badge_id=jti,
        holder_id=sub,
        zones=frozenset(zones),
        not_before=claims["nbf"],
        expires=claims["exp"],
        kid=kid,
    )
