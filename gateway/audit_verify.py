"""Proving the audit complete: signed checkpoints kept outside the database, verification, exports.

A checkpoint is the chain head (seq and hash) at a moment, signed with the gateway's decision key and
appended as one line to a file outside the database, which a lead can copy off the machine. Verification
walks the chain and checks every checkpoint against it: editing, deleting, inserting or reordering entries
breaks a hash or a link, and cutting entries off the end leaves a checkpoint pointing past the head.
An export carries a range of entries with the hash before it and the checkpoints in it, so it verifies on
another machine with nothing but the decision public key.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.audit_hash import FIELDS, GENESIS, text
from gateway.audit_ranges import verify_ranges, walk
from gateway.contract import b64url, b64url_decode, key_id
from gateway.db.models import AuditEntry

_CHECKPOINT_DOMAIN = b"acs-audit-checkpoint-v1\n"
_COLUMNS = [AuditEntry.seq, *(getattr(AuditEntry, f) for f in FIELDS), AuditEntry.prev_hash, AuditEntry.entry_hash]


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    entry_hash: str
    at_ms: int
    kid: str
    sig: str = ""

    def signing_bytes(self) -> bytes:
        body = {"seq": self.seq, "entry_hash": self.entry_hash, "at_ms": self.at_ms, "kid": self.kid}
        return _CHECKPOINT_DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def to_line(self) -> str:
        return json.dumps({"v": 1, **self.__dict__}, separators=(",", ":")) + "\n"

    @classmethod
    def from_line(cls, line: str) -> Checkpoint:
        data = json.loads(line)
        return cls(int(data["seq"]), str(data["entry_hash"]), int(data["at_ms"]), str(data["kid"]), str(data["sig"]))

    def problem(self, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
        key = keys.get(self.kid)
        if key is None:
            return f"checkpoint at seq {self.seq} is signed by an unknown key {self.kid!r}"
        try:
            key.verify(b64url_decode(self.sig), self.signing_bytes())
        except (InvalidSignature, ValueError):
            return f"checkpoint at seq {self.seq} has a bad signature"
        return None


def sign_checkpoint(seq: int, entry_hash: str, at: dt.datetime, key: Ed25519PrivateKey) -> Checkpoint:
    unsigned = Checkpoint(seq, entry_hash, int(at.timestamp() * 1000), key_id(key.public_key()))
    return Checkpoint(**{**unsigned.__dict__, "sig": b64url(key.sign(unsigned.signing_bytes()))})


def chain_head(session: Session) -> tuple[int, str]:
    head = session.execute(
        select(AuditEntry.seq, AuditEntry.entry_hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    return (head[0], head[1]) if head else (0, GENESIS)


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Append one line; O_APPEND keeps lines whole when several workers write to the same file."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, checkpoint.to_line().encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoints(path: Path) -> list[Checkpoint]:
    if not path.exists():
        return []
    return [Checkpoint.from_line(line) for line in path.read_text().splitlines() if line.strip()]


def checkpoint_now(session: Session, path: Path, key: Ed25519PrivateKey, now: dt.datetime) -> Checkpoint | None:
    """Sign and append the current head, unless the chain is empty or the last checkpoint already says it."""
    seq, digest = chain_head(session)
    if seq == 0:
        return None
    existing = read_checkpoints(path)
    if existing and existing[-1].seq == seq:
        return None
    checkpoint = sign_checkpoint(seq, digest, now, key)
    write_checkpoint(path, checkpoint)
    return checkpoint


@dataclass(frozen=True)
class Report:
    entries: int
    checkpoints: int
    problem: str | None  # the first problem found, naming the entry
    bad_seq: int | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _rows(session: Session, first: int = 1, last: int | None = None) -> Iterator[Any]:
    query = select(*_COLUMNS).where(AuditEntry.seq >= first).order_by(AuditEntry.seq)
    if last is not None:
        query = query.where(AuditEntry.seq <= last)
    result = session.execute(query.execution_options(yield_per=5000, stream_results=True))
    yield from result


def verify_database(session: Session, checkpoints: list[Checkpoint], keys: Mapping[str, Ed25519PublicKey]) -> Report:
    for cp in checkpoints:
        problem = cp.problem(keys)
        if problem:
            return Report(0, len(checkpoints), problem, cp.seq)
    marks = {cp.seq: cp.entry_hash for cp in checkpoints}
    top = session.scalar(select(func.max(AuditEntry.seq))) or 0
    count, problem, bad = verify_ranges(session, top, marks)
    if problem:
        return Report(count, len(checkpoints), problem, bad)
    last = max((cp.seq for cp in checkpoints), default=0)
    if last > count:
        return Report(
            count,
            len(checkpoints),
            f"entries {count + 1}..{last} are missing: the last checkpoint covers entry {last}",
            count + 1,
        )
    return Report(count, len(checkpoints), None, None)


def _value(v: object) -> object:
    return v.isoformat(timespec="milliseconds") if isinstance(v, dt.datetime) else v


def export_range(
    session: Session,
    first: int,
    last: int | None,
    checkpoints: list[Checkpoint],
    out: IO[str],
    key: Ed25519PrivateKey,
    now: dt.datetime,
) -> int:
    """Write entries first..last (JSON lines) with the hash before them and the checkpoints inside the range.

    When no checkpoint marks the range's last entry, one is signed for it now, so the export's end is proven.
    """
    prev = GENESIS
    if first > 1:
        before = session.scalar(select(AuditEntry.entry_hash).where(AuditEntry.seq == first - 1))
        if before is None:
            raise ValueError(f"no entry {first - 1} to anchor the export")
        prev = before
    out.write(json.dumps({"v": 1, "type": "acs-audit-export", "first": first, "prev_hash": prev}) + "\n")
    count = 0
    top = first - 1
    for row in _rows(session, first, last):
        entry = {
            "seq": row[0],
            **{f: _value(v) for f, v in zip(FIELDS, row[1 : 1 + len(FIELDS)], strict=True)},
            "prev_hash": row[-2],
            "entry_hash": row[-1],
        }
        out.write(json.dumps({"entry": entry}, separators=(",", ":")) + "\n")
        count += 1
        top = row[0]
    inside = [cp for cp in checkpoints if first <= cp.seq <= top]
    if count and not any(cp.seq == top for cp in inside):
        digest = session.scalar(select(AuditEntry.entry_hash).where(AuditEntry.seq == top))
        inside.append(sign_checkpoint(top, str(digest), now, key))
    for cp in inside:
        out.write(json.dumps({"checkpoint": json.loads(cp.to_line())}) + "\n")
    return count


def verify_export(lines: Iterable[str], keys: Mapping[str, Ed25519PublicKey]) -> Report:
    """Verify an export with the public key alone: links, hashes, and at least one signed checkpoint at its end."""
    it = iter(lines)
    header = json.loads(next(it))
    if header.get("type") != "acs-audit-export":
        return Report(0, 0, "not an audit export", None)
    entries: list[dict[str, Any]] = []
    checkpoints: list[Checkpoint] = []
    for line in it:
        item = json.loads(line)
        if "entry" in item:
            entries.append(item["entry"])
        elif "checkpoint" in item:
            checkpoints.append(Checkpoint.from_line(json.dumps(item["checkpoint"])))
    for cp in checkpoints:
        problem = cp.problem(keys)
        if problem:
            return Report(0, len(checkpoints), problem, cp.seq)
    rows = ([e["seq"], *(text(e[f]) for f in FIELDS), e["prev_hash"], e["entry_hash"]] for e in entries)
    count, problem, bad = walk(
        rows, header["prev_hash"], header["first"], {cp.seq: cp.entry_hash for cp in checkpoints}
    )
    if problem:
        return Report(count, len(checkpoints), problem, bad)
    last_seq = header["first"] + count - 1
    if not any(cp.seq == last_seq for cp in checkpoints):
        return Report(
            count,
            len(checkpoints),
            f"no signed checkpoint at the export's last entry {last_seq}: its end cannot be proven",
            last_seq,
        )
    return Report(count, len(checkpoints), None, None)
