"""The decision audit: append-only rows, each hashing its predecessor, committed before any answer leaves.

The hash covers a canonical, length-prefixed encoding of every field, so editing, deleting, inserting or
reordering a row breaks the chain from that row on. Appends are serialised per database (BEGIN IMMEDIATE on
SQLite, a transaction-scoped advisory lock on PostgreSQL) so several workers still write one linear chain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from gateway.db.models import DecisionRecord

GENESIS = "0" * 64
_CHAIN_LOCK = 0x41435321  # PostgreSQL advisory lock key of the audit chain ("ACS!")


@dataclass(frozen=True)
class DecisionEntry:
    nonce: str
    reader: str
    gate: str
    badge_id: str
    holder_id: str
    allow: bool
    reason: str
    detail: str
    mode: str
    decided_at: dt.datetime
    received_at: dt.datetime
    expires_ms: int


def to_ms(t: dt.datetime) -> dt.datetime:
    """Times are kept to the millisecond, the precision every database here stores exactly."""
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def _encode(seq: int, e: DecisionEntry) -> Iterator[bytes]:
    fields = [
        str(seq),
        e.nonce,
        e.reader,
        e.gate,
        e.badge_id,
        e.holder_id,
        "1" if e.allow else "0",
        e.reason,
        e.detail,
        e.mode,
        e.decided_at.isoformat(timespec="milliseconds"),
        e.received_at.isoformat(timespec="milliseconds"),
        str(e.expires_ms),
    ]
    for value in fields:
        data = value.encode("utf-8")
        yield len(data).to_bytes(4, "big")
        yield data


def entry_hash(prev_hash: str, seq: int, entry: DecisionEntry) -> str:
    h = hashlib.sha256(b"acs-audit-v1\n" + bytes.fromhex(prev_hash))
    for part in _encode(seq, entry):
        h.update(part)
    return h.hexdigest()


def append(session: Session, entry: DecisionEntry) -> DecisionRecord:
    """Add one entry at the head of the chain, inside the caller's transaction (the caller commits)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHAIN_LOCK})
    head = session.execute(
        select(DecisionRecord.seq, DecisionRecord.entry_hash).order_by(DecisionRecord.seq.desc()).limit(1)
    ).first()
    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
    entry = DecisionEntry(
        **{**entry.__dict__, "decided_at": to_ms(entry.decided_at), "received_at": to_ms(entry.received_at)}
    )
    record = DecisionRecord(
        seq=seq, prev_hash=prev, entry_hash=entry_hash(prev, seq, entry), **entry.__dict__
    )
    session.add(record)
    session.flush()
    return record


def as_entry(record: DecisionRecord) -> DecisionEntry:
    return DecisionEntry(
        nonce=record.nonce,
        reader=record.reader,
        gate=record.gate,
        badge_id=record.badge_id,
        holder_id=record.holder_id,
        allow=record.allow,
        reason=record.reason,
        detail=record.detail,
        mode=record.mode,
        decided_at=record.decided_at,
        received_at=record.received_at,
        expires_ms=record.expires_ms,
    )


def first_broken(session: Session) -> int | None:
    """The seq of the first row whose link or hash does not hold, or None when the chain is whole."""
    prev, expected_seq = GENESIS, 1
    for record in session.scalars(select(DecisionRecord).order_by(DecisionRecord.seq)):
        if record.seq != expected_seq or record.prev_hash != prev:
            return record.seq
        if entry_hash(prev, record.seq, as_entry(record)) != record.entry_hash:
            return record.seq
        prev, expected_seq = record.entry_hash, record.seq + 1
    return None
