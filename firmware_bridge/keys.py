"""Controller key files: one OSDP secure channel base key (16 bytes) as hex, readable by its owner only.

A site keeps one file per controller, named after its gate (`<GATE>.scbk`) in a key folder only the bridge's
account can read.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

KEY_BYTES = 16
# The OSDP install key (SCBK-D) every controller knows: published in the standard, so it protects nothing.
SCBK_D = bytes(range(0x30, 0x40))
KEY_SUFFIX = ".scbk"


class KeyFileError(ValueError):
    """A key file is missing, unsafe or malformed."""


def key_path(key_dir: str | Path, gate: str) -> Path:
    """Where the key of the controller behind `gate` lives in a key folder."""
    return Path(key_dir) / f"{gate}{KEY_SUFFIX}"


def key_problem(key: bytes) -> str | None:
    """Why `key` must never be a controller's key, or None when it may be."""
    if len(key) != KEY_BYTES:
        return f"expected a {KEY_BYTES}-byte key ({KEY_BYTES * 2} hex digits), got {len(key)} bytes"
    if key == SCBK_D:
        return "this is the OSDP default install key (SCBK-D), which every controller and attacker knows"
    if len(set(key)) == 1:
        return "every byte of this key is the same: it was not made by keygen"
    return None


def new_key_file(path: str | Path) -> Path:
    """Write a fresh random key to a new file created 0600; refuses to overwrite an existing key."""
    p = Path(path)
    try:
        # O_EXCL: replacing a key by accident would lock the bridge out of a controller keyed with it.
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{p}: already exists; refusing to overwrite a controller key") from None
    try:
        os.fchmod(fd, 0o600)  # the mode given to open is narrowed by the umask, never widened; be exact
        os.write(fd, (secrets.token_bytes(KEY_BYTES).hex() + "\n").encode("ascii"))
    finally:
        os.close(fd)
    return p


def load_key_file(path: str | Path) -> bytes:
    """Read a key file written by new_key_file, refusing one that group or others could read."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise KeyFileError(f"{p}: cannot read the controller key: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise KeyFileError(f"{p}: not a regular file")
    if mode & 0o077:
        raise KeyFileError(
            f"{p}: permissions {stat.S_IMODE(mode):04o} let group or others use the controller key; "
            f"run 'chmod 600 {p}' (and consider the key leaked: make a new one)"
        )
    text = p.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyFileError(f"{p}: expected {KEY_BYTES * 2} hex digits") from None
    problem = key_problem(key)
    if problem is not None:
        raise KeyFileError(f"{p}: {problem}")
    return key
