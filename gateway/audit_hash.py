"""The audit chain's hash: SHA-256 over the previous hash and a length-prefixed encoding of every field.

Kept apart from the database code (no SQLAlchemy here) because `audit verify` runs it in worker processes, which
then start in a few milliseconds, and because it is the one definition every writer and verifier must share.

Encoding (version 1): b"acs-audit-v1\\n", the previous entry's hash (32 bytes), then seq and each field of FIELDS
in order, each as its UTF-8 text preceded by that text's length in bytes (4 bytes, big-endian). A field's text:
None is "\\x00" (distinct from any string a field holds), booleans "1"/"0", times ISO 8601 to the millisecond,
anything else str().
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import struct
from collections.abc import Sequence

GENESIS = "0" * 64
# The hashed fields after seq, in hashing order (gateway.audit checks its Entry against this at import).
FIELDS: tuple[str, ...] = (
    "kind",
    "at",
    "recorded_at",
    "ref",
    "reader",
    "gate",
    "badge_id",
    "holder_id",
    "operator",
    "allow",
    "reason",
    "mode",
    "detail",
    "expires_ms",
)
NULL_TEXT = "\x00"

_DOMAIN = b"acs-audit-v1\n"
_LENGTH = struct.Struct(">I").pack
# The 4-byte prefix of a text shorter than 128 characters, as ASCII characters: an all-ASCII entry whose fields
# are all short (nearly every entry) is then encoded by one join and one encode instead of one per field.
_SHORT_PREFIX = tuple(_LENGTH(n).decode("ascii") for n in range(128))
_PREFIX_BYTES = tuple(_LENGTH(n) for n in range(4096))


def text(value: object) -> str:
    """A field's text as the hash covers it."""
    if value is None:
        return NULL_TEXT
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="milliseconds")
    return str(value)


def chain_hash(prev_hash: str, seq: int, values: Sequence[object]) -> str:
    """The hash of entry `seq` with these field values (FIELDS order) after the entry hashed `prev_hash`."""
    return hash_texts(prev_hash, str(seq), [v if v.__class__ is str else text(v) for v in values])


def hash_texts(prev_hash: str, seq_text: str, texts: Sequence[str]) -> str:
    """`chain_hash` from the fields' texts (what `audit verify` reads straight from the database)."""
    try:
        body = _SHORT_PREFIX[len(seq_text)] + seq_text + "".join([_SHORT_PREFIX[len(t)] + t for t in texts])
    except IndexError:  # a text of 128 characters or more
        body = None
    if body is not None and body.isascii():  # one byte per character: lengths in characters are lengths in bytes
        encoded = body.encode("ascii")
    else:
        parts = [t.encode() for t in (seq_text, *texts)]
        encoded = b"".join([_LENGTH(len(p)) + p for p in parts])
    return hashlib.sha256(_DOMAIN + bytes.fromhex(prev_hash) + encoded).hexdigest()


def hash_encoded(prev_hash: bytes, seq: int, fields: Sequence[bytes]) -> bytes:
    """`chain_hash` from the fields' texts already UTF-8 encoded, with the hashes as ASCII hex bytes (how a SQLite
    connection with `text_factory = bytes` hands rows over: no decoding, and byte lengths as they are)."""
    seq_bytes = str(seq).encode()
    try:
        encoded = _PREFIX_BYTES[len(seq_bytes)] + seq_bytes + b"".join([_PREFIX_BYTES[len(f)] + f for f in fields])
    except IndexError:  # a field of 4,096 bytes or more
        encoded = b"".join([_LENGTH(len(f)) + f for f in (seq_bytes, *fields)])
    return hashlib.sha256(_DOMAIN + binascii.unhexlify(prev_hash) + encoded).hexdigest().encode()
