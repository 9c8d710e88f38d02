"""The reader's own Ed25519 offline key: it signs the answers the reader gives while the gateway is away.

The private key stays on the reader (owner-only file); its public key (`<key>.pub.pem`) is given to the bridge
of the reader's gate (`python -m firmware_bridge run --reader-key READER=FILE`). It never signs anything the
bridge would take for the gateway's word: offline answers have their own signing domain.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class OfflineKeyError(ValueError):
    """The offline key file is missing, unreadable, not Ed25519 or readable by others."""


def public_key_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".pub.pem")


def generate_offline_key(path: Path) -> Path:
    """Write a new private key to `path` (owner-only; refuses to overwrite) and its public key beside it."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise OfflineKeyError(f"{path} exists already; an offline key is never overwritten") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = public_key_path(path)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return public


def load_offline_key(path: Path) -> Ed25519PrivateKey:
    try:
        mode = path.stat().st_mode
        pem = path.read_bytes()
    except OSError as exc:
        raise OfflineKeyError(f"{path}: {exc.strerror}") from None
    if mode & 0o077:
        raise OfflineKeyError(f"{path} is readable by others (chmod 600 it)")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise OfflineKeyError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise OfflineKeyError(f"{path}: the offline key must be Ed25519")
    return key
