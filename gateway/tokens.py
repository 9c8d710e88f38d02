"""Badge tokens: compact EdDSA JWTs carried in the QR code.

Issuing needs the gateway's private badge key; verifying needs only the accepted public keys (and, to read
short badge codes back as zones, the site's `zone_for_badge_code`), so readers use this module offline too.
Verification checks what a key can prove (algorithm, `kid`, signature, `typ`, issuer, claim shapes). The
validity window is judged by the decision core, which is given `now`. No I/O and no clock here.

Size matters: the token must fit a QR code of version 12 at error correction M (287 bytes), which cameras
read from further away than the version 14-15 codes a naive token needs. So the `kid` is 4 characters, ids
are 8, and `zn` is one space-separated string of short badge codes (like OAuth's `scope` claim), not a list.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway import ed25519
from gateway.contract import MAX_TOKEN_CHARS, key_id, signing_key_id
from gateway.core import BadgeClaims, Reason, TokenProblem

BADGE_TYP = "badge"
ALGORITHM = "EdDSA"
QR_MAX_VERSION = 12  # error correction M
QR_MAX_BYTES = 287  # what a version 12-M QR code holds in byte mode: the most a badge token may be
KID_CHARS = 4
_ID = re.compile(r"^[A-Za-z0-9_-]{4,40}\Z")
_ZONE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}\Z")
_CLAIMS = {"iss", "jti", "sub", "zn", "nbf", "exp"}

BadgeKeys = Mapping[str, Ed25519PublicKey]  # kid -> accepted public key


def badge_key_id(public_key: Ed25519PublicKey) -> str:
    """The first 4 characters of the key's RFC 7638 thumbprint (base64url): short for the QR, never chosen by
    hand. The gateway refuses to create a key whose kid another key (accepted or retired) already has."""
    return key_id(public_key)[:KID_CHARS]


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
    """Sign a badge. Only opaque ids, zone (badge) codes and the validity window: no personal data in the QR."""
    claims = {
        "iss": issuer,
        "jti": badge_id,
        "sub": holder_id,
        "zn": " ".join(sorted(set(zones))),
        "nbf": not_before,
        "exp": expires,
    }
    headers = {"kid": signing_key_id(private_key)[:KID_CHARS], "typ": BADGE_TYP}
    return jwt.encode(claims, private_key, algorithm=ALGORITHM, headers=headers)


def fits_qr(token: str) -> bool:
    """Does the token fit a QR code of version 12 or lower at error correction M?"""
    return len(token.encode()) <= QR_MAX_BYTES


def size_problem(issuer: str, zones: Sequence[str], id_chars: int = 8) -> str | None:
    """Why a badge naming these zone (badge) codes would not fit the QR code, or None when it fits."""
    sample = issue_token(
        Ed25519PrivateKey.from_private_bytes(bytes(32)),  # the size does not depend on the key
        issuer=issuer,
        badge_id="x" * id_chars,
        holder_id="x" * id_chars,
        zones=zones,
        not_before=2_000_000_000,
        expires=2_000_000_000,
    )
    over = len(sample.encode()) - QR_MAX_BYTES
    if over <= 0:
        return None
    return (
        f"a badge for zones {' '.join(sorted(set(zones)))} would be {over} bytes too long for a version "
        f"{QR_MAX_VERSION} QR code: name fewer zones (a parent with 'inherit' children covers them), "
        "or give the zones short badge codes in zones.yaml"
    )


def verify_token(
    token: str, keys: BadgeKeys, issuer: str, zone_for_badge_code: Mapping[str, str] | None = None
) -> BadgeClaims | TokenProblem:
    """What the token proves, or the problem that stops it proving anything.

    `zone_for_badge_code` (the site's) turns the badge codes in `zn` back into zone codes; a code it does not
    know is kept as written, so it opens only a zone of that very code.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        return TokenProblem(Reason.TOKEN_MALFORMED, "not a compact JWT")
    # Parsed here rather than by pyjwt: the same checks in a third of the time (a gate's queue waits on it).
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = _json_segment(header_b64)
    if not isinstance(header, dict):
        return TokenProblem(Reason.TOKEN_MALFORMED, "unreadable header: not a base64url JSON object")
    if header.get("alg") != ALGORITHM:
        return TokenProblem(Reason.BAD_SIGNATURE, f"algorithm {str(header.get('alg'))[:20]!r} is not accepted")
    if "crit" in header:
        return TokenProblem(Reason.TOKEN_MALFORMED, "critical header extensions are not supported")
    kid = header.get("kid")
    if "kid" in header and not isinstance(kid, str):
        return TokenProblem(Reason.TOKEN_MALFORMED, "unreadable header: kid is not a string")
    # The kid is only ever a dictionary key here: it never names a file or a database row.
    if not isinstance(kid, str) or kid not in keys:
        return TokenProblem(Reason.UNKNOWN_KID, f"key id {str(kid)[:40]!r} is not accepted")
    if header.get("typ") != BADGE_TYP:
        return TokenProblem(Reason.WRONG_TYP, f"typ {str(header.get('typ'))[:20]!r} is not a badge")
    signature = _segment(signature_b64)
    if signature is None:
        return TokenProblem(Reason.TOKEN_MALFORMED, "undecodable: signature is not base64url")
    signed = f"{header_b64}.{payload_b64}"
    if not signed.isascii() or not ed25519.verify(keys[kid], signature, signed.encode("ascii")):
        return TokenProblem(Reason.BAD_SIGNATURE, "signature does not verify")
    claims = _json_segment(payload_b64)
    if not isinstance(claims, dict):
        return TokenProblem(Reason.TOKEN_MALFORMED, "undecodable: the payload is not a JSON object")
    return _claims(claims, kid, issuer, zone_for_badge_code or {})


_B64URL = re.compile(r"^[A-Za-z0-9_-]*\Z")


def _segment(text: str) -> bytes | None:
    """A base64url segment (unpadded, as JWS writes it) decoded, or None when it is not one."""
    if not _B64URL.match(text) or len(text) % 4 == 1:
        return None
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_segment(text: str) -> Any:
    raw = _segment(text)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:  # bad JSON or bad UTF-8
        return None


def _zone_codes(value: Any) -> list[str] | None:
    """`zn`: zone codes separated by single spaces, or None when it is anything else."""
    if not isinstance(value, str):
        return None
    codes = value.split(" ")
    if value and not all(_ZONE.match(code) for code in codes):
        return None
    return codes if value else []


def _claims(
    claims: dict[str, Any], kid: str, issuer: str, zone_for_badge_code: Mapping[str, str]
) -> BadgeClaims | TokenProblem:
    missing = _CLAIMS - set(claims)
    if missing:
        return TokenProblem(Reason.TOKEN_MALFORMED, f"missing claim(s): {', '.join(sorted(missing))}")
    if claims["iss"] != issuer:
        return TokenProblem(Reason.WRONG_ISSUER, f"issuer {str(claims['iss'])[:40]!r} is not {issuer!r}")
    jti, sub, zones = claims["jti"], claims["sub"], _zone_codes(claims["zn"])
    if not isinstance(jti, str) or not _ID.match(jti):
        return TokenProblem(Reason.TOKEN_MALFORMED, "jti is not a badge id")
    if not isinstance(sub, str) or not _ID.match(sub):
        return TokenProblem(Reason.TOKEN_MALFORMED, "sub is not a holder id")
    if zones is None:
        return TokenProblem(Reason.TOKEN_MALFORMED, "zn is not a space-separated list of zone codes")
    for name in ("nbf", "exp"):
        if isinstance(claims[name], bool) or not isinstance(claims[name], int):
            return TokenProblem(Reason.TOKEN_MALFORMED, f"{name} is not an integer time")
    return BadgeClaims(
        badge_id=jti,
        holder_id=sub,
        zones=frozenset(zone_for_badge_code.get(code, code) for code in zones),
        not_before=claims["nbf"],
        expires=claims["exp"],
        kid=kid,
    )
