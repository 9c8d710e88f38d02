"""The gateway's instance folder: its settings, its signing keys, its web secret.

Layout (created by `python -m gateway init`):
    gateway.json               settings: database URL, site file, issuer, active badge key id
    secret_key                 Flask session secret (owner-only)
    keys/badge-<kid>.pem       Ed25519 badge signing keys (owner-only); .pub.pem beside each
    keys/decision.pem          Ed25519 decision signing key (owner-only); decision.pub.pem is given to readers

Nothing here has a default secret: a missing or world-readable key stops the gateway with a clear message.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.contract import b64url, key_id


class InstanceError(RuntimeError):
    """The instance folder is missing, incomplete or unsafe."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    site_file: Path
    issuer: str
    badge_kid: str  # the key new badges are signed with

    def to_json(self) -> str:
        return json.dumps(
            {
                "database_url": self.database_url,
                "site_file": str(self.site_file),
                "issuer": self.issuer,
                "badge_kid": self.badge_kid,
            },
            indent=2,
        )


@dataclass(frozen=True)
class Keyring:
    badge_signing: Ed25519PrivateKey
    badge_kid: str
    badge_public: Mapping[str, Ed25519PublicKey]  # every badge key still accepted, by kid
    decision_signing: Ed25519PrivateKey

    @property
    def decision_kid(self) -> str:
        return key_id(self.decision_signing.public_key())

    def jwks(self) -> dict[str, Any]:
        """Public keys as a JWK Set (RFC 7517/8037); `use` says which kind of signature each verifies."""
        keys = [_jwk(pub, kid, "badge") for kid, pub in sorted(self.badge_public.items())]
        keys.append(_jwk(self.decision_signing.public_key(), self.decision_kid, "decision"))
        return {"keys": keys}


def _jwk(pub: Ed25519PublicKey, kid: str, purpose: str) -> dict[str, str]:
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(raw),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
        "acs_purpose": purpose,
    }


@dataclass(frozen=True)
class Instance:
    folder: Path
    settings: Settings
    keyring: Keyring
    secret_key: bytes


def write_private(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only, from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def new_badge_key(folder: Path) -> str:
    """Create a badge signing key; returns its kid. Older keys stay accepted until retired."""
    keys = folder / "keys"
    key = Ed25519PrivateKey.generate()
    kid = key_id(key.public_key())
    write_private(keys / f"badge-{kid}.pem", _pem_private(key))
    (keys / f"badge-{kid}.pub.pem").write_bytes(_pem_public(key.public_key()))
    return kid


def create_instance(folder: Path, database_url: str, site_file: Path, issuer: str) -> Settings:
    """Create keys, secret and settings in a new instance folder; refuses to overwrite an existing one."""
    if (folder / "gateway.json").exists():
        raise InstanceError(
            f"{folder} already holds an instance (gateway.json exists); refusing to overwrite keys"
        )
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    (folder / "keys").mkdir(mode=0o700, exist_ok=True)
    kid = new_badge_key(folder)
    decision = Ed25519PrivateKey.generate()
    write_private(folder / "keys" / "decision.pem", _pem_private(decision))
    (folder / "keys" / "decision.pub.pem").write_bytes(_pem_public(decision.public_key()))
    write_private(folder / "secret_key", secrets.token_bytes(32))
    settings = Settings(
        database_url=database_url, site_file=site_file.resolve(), issuer=issuer, badge_kid=kid
    )
    write_private(folder / "gateway.json", settings.to_json().encode())
    return settings


def _read_private(path: Path) -> bytes:
    if not path.exists():
        raise InstanceError(f"missing {path}: create the instance with `python -m gateway init`")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InstanceError(f"{path} is readable by others (mode {stat.filemode(mode)}); chmod 600 it")
    return path.read_bytes()


def _private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(_read_private(path), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise InstanceError(f"{path} is not an Ed25519 private key")
    return key


def load_instance(folder: Path) -> Instance:
    """Load settings and keys; refuses to go on without every key."""
    try:
        raw = json.loads(_read_private(folder / "gateway.json"))
        settings = Settings(
            database_url=raw["database_url"],
            site_file=Path(raw["site_file"]),
            issuer=raw["issuer"],
            badge_kid=raw["badge_kid"],
        )
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise InstanceError(f"{folder / 'gateway.json'} is damaged: {exc}") from None
    keys = folder / "keys"
    public: dict[str, Ed25519PublicKey] = {}
    for pub_file in sorted(keys.glob("badge-*.pub.pem")):
        pub = serialization.load_pem_public_key(pub_file.read_bytes())
        if isinstance(pub, Ed25519PublicKey):
            public[key_id(pub)] = pub
    signing = _private_key(keys / f"badge-{settings.badge_kid}.pem")
    if key_id(signing.public_key()) != settings.badge_kid:
        raise InstanceError(f"badge key file for {settings.badge_kid} holds another key")
    public[settings.badge_kid] = signing.public_key()
    return Instance(
        folder=folder,
        settings=settings,
        keyring=Keyring(
            badge_signing=signing,
            badge_kid=settings.badge_kid,
            badge_public=public,
            decision_signing=_private_key(keys / "decision.pem"),
        ),
        secret_key=_read_private(folder / "secret_key"),
    )
