"""Ed25519 signatures made and checked by libsodium (PyNaCl): the decision path's cryptography.

Keys stay `cryptography` objects everywhere else (key files, JWKs, thumbprints); a signing key's public half, which
names it in every answer (`kid`), is read from libsodium's form of the key. Each decision checks one badge
signature and makes one answer signature, and readers check every answer: libsodium does each about twice as
fast as OpenSSL on this machine and lets other threads run meanwhile (docs/performance.md). It is the same
algorithm (RFC 8032) with the same signatures, and libsodium is the stricter checker: it also refuses
small-order keys and non-canonical points.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import CryptoError

SIGNATURE_BYTES = 64
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
_RAW_PRIVATE = (serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())

# id(key) -> (key, libsodium's form of it). The key is kept so its id cannot be reused by another object. A
# process holds a handful of keys (rotation adds one at a time); the bound only guards against misuse.
_public: dict[int, tuple[Ed25519PublicKey, bytes]] = {}
_private: dict[int, tuple[Ed25519PrivateKey, bytes]] = {}
_MAX_KEYS = 256


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    held = _public.get(id(key))
    if held is None or held[0] is not key:
        if len(_public) >= _MAX_KEYS:
            _public.clear()
        held = _public[id(key)] = (key, key.public_bytes(*_RAW))
    return held[1]


def _secret_bytes(key: Ed25519PrivateKey) -> bytes:
    held = _private.get(id(key))
    if held is None or held[0] is not key:
        if len(_private) >= _MAX_KEYS:
            _private.clear()
        seed = key.private_bytes(*_RAW_PRIVATE)
        held = _private[id(key)] = (key, crypto_sign_seed_keypair(seed)[1])
    return held[1]


def public_raw(key: Ed25519PrivateKey) -> bytes:
    """The raw public key of a private key, from libsodium's secret key (seed then public key): OpenSSL's
    `public_key()` derives it afresh at each call, about 40 us, which every answer signature paid for its kid."""
    return _secret_bytes(key)[32:]


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    """The 64-byte signature of `message` (libsodium returns signature + message)."""
    return crypto_sign(message, _secret_bytes(key))[:SIGNATURE_BYTES]


def verify(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """True when `signature` is `key`'s over `message`; never raises for a bad signature."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        crypto_sign_open(signature + message, _public_bytes(key))
    except CryptoError:  # BadSignatureError, or a key libsodium refuses (small order)
        return False
    return True
