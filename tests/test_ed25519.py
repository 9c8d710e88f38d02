"""libsodium's Ed25519 (gateway/ed25519.py) makes and accepts exactly the signatures OpenSSL's does."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway import contract, ed25519


def test_signatures_are_the_same_as_openssl_makes_and_each_side_accepts_the_other() -> None:
    key = Ed25519PrivateKey.generate()
    for message in (b"", b"x", b"acs-decision-v1\n" + b"{}" * 300):
        ours = ed25519.sign(key, message)
        assert ours == key.sign(message)  # Ed25519 is deterministic: same key and message, same signature
        key.public_key().verify(ours, message)  # raises if OpenSSL disagrees
        assert ed25519.verify(key.public_key(), key.sign(message), message)


@pytest.mark.parametrize(
    "change",
    [
        lambda sig, msg, key: (sig[:-1] + bytes([sig[-1] ^ 1]), msg, key),  # one bit of the signature
        lambda sig, msg, key: (sig, msg + b".", key),  # the message
        lambda sig, msg, key: (sig, msg, Ed25519PrivateKey.generate().public_key()),  # another key
        lambda sig, msg, key: (sig[:63], msg, key),  # too short
        lambda sig, msg, key: (sig + b"\0", msg, key),  # too long
        lambda sig, msg, key: (b"", msg, key),
    ],
)
def test_anything_changed_is_refused_without_raising(change: object) -> None:
    key = Ed25519PrivateKey.generate()
    message = b"reader STA-G1-IN allow"
    sig, msg, public = change(ed25519.sign(key, message), message, key.public_key())  # type: ignore[operator]
    assert ed25519.verify(public, sig, msg) is False
    with pytest.raises(InvalidSignature):  # and OpenSSL agrees it is bad
        public.verify(sig, msg)


def test_a_small_order_public_key_is_refused() -> None:
    # The identity point: any "signature" with R = identity and s = 0 satisfies the equation for it, so a
    # checker that accepts such keys accepts forgeries. libsodium refuses the key outright.
    identity = Ed25519PublicKey.from_public_bytes(bytes([1]) + bytes(31))
    forged = bytes([1]) + bytes(31) + bytes(32)
    assert ed25519.verify(identity, forged, b"open gate 3") is False


def test_keys_are_told_apart_even_when_one_is_replaced_by_a_new_object() -> None:
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    message = b"m"
    assert ed25519.verify(first.public_key(), ed25519.sign(first, message), message)
    del first  # its id may now be reused by the next key object: the cache must not confuse them
    third = Ed25519PrivateKey.generate()
    assert ed25519.sign(third, message) == third.sign(message)
    assert ed25519.sign(second, message) == second.sign(message)


def test_the_public_half_and_kid_of_a_private_key_are_those_openssl_derives() -> None:
    for _ in range(20):
        key = Ed25519PrivateKey.generate()
        assert ed25519.public_raw(key) == key.public_key().public_bytes_raw()
        assert contract.signing_key_id(key) == contract.key_id(key.public_key())
