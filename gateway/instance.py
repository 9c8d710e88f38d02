"""The gateway's instance folder: its settings, its signing keys, its web secret.

Layout (created by `python -m gateway init`):
    gateway.json               settings: database URL, site file, issuer, active badge key id
    secret_key                 Flask session secret (owner-only)
    keys/badge-<kid>.pem       the Ed25519 badge signing key in use (owner-only)
    keys/badge-<kid>.pub.pem   every badge key still accepted (the one in use and older ones)
    keys/retired/              public keys no longer accepted: badges they signed are refused (unknown_kid)
    keys/decision.pem          Ed25519 decision signing key (owner-only); decision.pub.pem is given to readers

Nothing here has a default secret: a missing or world-readable key stops the gateway with a clear message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.contract import b64url, signing_key_id
from gateway.tokens import badge_key_id


class InstanceError(RuntimeError):
    """The instance folder is missing, incomplete or unsafe."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    site_file: Path
    issuer: str
    badge_kid: str  # the key new badges are signed with
    # Days after a holder's last badge ended before retention removes their personal data (None: not set).
    personal_data_days: int | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "database_url": self.database_url,
                "site_file": str(self.site_file),
                "issuer": self.issuer,
                "badge_kid": self.badge_kid,
                "personal_data_days": self.personal_data_days,
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
        return signing_key_id(self.decision_signing)

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


def _kids(folder: Path) -> set[str]:
    """Every badge kid this instance ever had, accepted or retired: a new key must not reuse one."""
    names = [*folder.glob("badge-*.pem"), *(folder / "retired").glob("badge-*.pem")]
    return {p.name.removeprefix("badge-").split(".")[0] for p in names}


def new_badge_key(folder: Path) -> str:
    """Create a badge signing key; returns its kid. Older keys stay accepted until retired."""
    keys = folder / "keys"
    taken = _kids(keys)
    while True:  # a 4-character kid can collide (1 in 16 million per pair): draw again rather than share one
        key = Ed25519PrivateKey.generate()
        kid = badge_key_id(key.public_key())
        if kid not in taken:
            break
    write_private(keys / f"badge-{kid}.pem", _pem_private(key))
    (keys / f"badge-{kid}.pub.pem").write_bytes(_pem_public(key.public_key()))
    return kid


def _write_settings(folder: Path, settings: Settings) -> None:
    """Replace gateway.json in one step (owner-only), so that a reader never sees half a file."""
    temp = folder / "gateway.json.new"
    temp.unlink(missing_ok=True)
    write_private(temp, settings.to_json().encode())
    os.replace(temp, folder / "gateway.json")


@dataclass(frozen=True)
class BadgeKeyInfo:
    kid: str
    state: str  # "signing" (new badges), "accepted" (older badges still valid), "retired" (refused)
    since: dt.datetime  # when its public key file was last written (created, or moved when retired)


def save_settings(folder: Path, settings: Settings) -> None:
    """Replace the instance's settings (e.g. the retention period)."""
    _write_settings(folder, settings)


def badge_keys(folder: Path) -> list[BadgeKeyInfo]:
    """The instance's badge keys, newest first, with what each is used for."""
    settings = load_settings(folder)
    found = []
    for state_dir, state in ((folder / "keys", "accepted"), (folder / "keys" / "retired", "retired")):
        for pub in state_dir.glob("badge-*.pub.pem"):
            kid = pub.name.removeprefix("badge-").removesuffix(".pub.pem")
            since = dt.datetime.fromtimestamp(pub.stat().st_mtime, dt.UTC)
            found.append(BadgeKeyInfo(kid, "signing" if kid == settings.badge_kid else state, since))
    order = {"signing": 0, "accepted": 1, "retired": 2}
    return sorted(found, key=lambda k: (order[k.state], -k.since.timestamp(), k.kid))


def rotate_badge_key(folder: Path) -> tuple[str, str]:
    """Sign new badges with a new key (a new kid); returns (old kid, new kid).

    The old public key stays accepted, so badges it signed keep working until it is retired. Its private key is
    deleted: nothing is ever signed with it again, and a key that no longer exists cannot leak.
    """
    settings = load_settings(folder)
    new_kid = new_badge_key(folder)
    _write_settings(folder, dataclasses.replace(settings, badge_kid=new_kid))
    (folder / "keys" / f"badge-{settings.badge_kid}.pem").unlink(missing_ok=True)
    return settings.badge_kid, new_kid


def retire_badge_key(folder: Path, kid: str) -> None:
    """Stop accepting a badge key: every badge it signed is refused from now on (`unknown_kid`)."""
    settings = load_settings(folder)
    if kid == settings.badge_kid:
        raise InstanceError(f"key {kid} signs new badges; rotate to a new key before retiring it")
    keys = folder / "keys"
    pub = keys / f"badge-{kid}.pub.pem"
    if not pub.is_file() or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", kid):
        raise InstanceError(f"no accepted badge key {kid!r}")
    retired = keys / "retired"
    retired.mkdir(mode=0o700, exist_ok=True)
    os.replace(pub, retired / pub.name)
    (keys / f"badge-{kid}.pem").unlink(missing_ok=True)


def instance_stamp(folder: Path) -> tuple[int, int]:
    """Changes whenever settings or keys change: long-running processes compare it to reload their keyring."""
    return ((folder / "gateway.json").stat().st_mtime_ns, (folder / "keys").stat().st_mtime_ns)


def create_instance(folder: Path, database_url: str, site_file: Path, issuer: str) -> Settings:
    """Create keys, secret and settings in a new instance folder; refuses to overwrite an existing one."""
    if (folder / "gateway.json").exists():
        raise InstanceError(f"{folder} already holds an instance (gateway.json exists); refusing to overwrite keys")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    (folder / "keys").mkdir(mode=0o700, exist_ok=True)
    kid = new_badge_key(folder)
    decision = Ed25519PrivateKey.generate()
    write_private(folder / "keys" / "decision.pem", _pem_private(decision))
    (folder / "keys" / "decision.pub.pem").write_bytes(_pem_public(decision.public_key()))
    write_private(folder / "secret_key", secrets.token_bytes(32))
    settings = Settings(database_url=database_url, site_file=site_file.resolve(), issuer=issuer, badge_kid=kid)
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


def _days(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"personal_data_days must be a whole number of days, not {value!r}")
    return value


def load_settings(folder: Path) -> Settings:
    try:
        raw = json.loads(_read_private(folder / "gateway.json"))
        return Settings(
            database_url=raw["database_url"],
            site_file=Path(raw["site_file"]),
            issuer=raw["issuer"],
            badge_kid=raw["badge_kid"],
            personal_data_days=_days(raw.get("personal_data_days")),
        )
    except (KeyError, TypeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise InstanceError(f"{folder / 'gateway.json'} is damaged: {exc}") from None


def load_instance(folder: Path) -> Instance:
    """Load settings and keys; refuses to go on without every key."""
    settings = load_settings(folder)
    keys = folder / "keys"
    public: dict[str, Ed25519PublicKey] = {}
    for pub_file in sorted(keys.glob("badge-*.pub.pem")):  # keys/retired/ is not searched: not accepted
        pub = serialization.load_pem_public_key(pub_file.read_bytes())
        if isinstance(pub, Ed25519PublicKey):
            public[badge_key_id(pub)] = pub
    signing = _private_key(keys / f"badge-{settings.badge_kid}.pem")
    if badge_key_id(signing.public_key()) != settings.badge_kid:
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
