"""The bridge's outbox: controller events kept on disk until the gateway confirms it has audited them.

Every event is written here (SQLite, synchronous) before anything tries to send it, and removed only when
the gateway's acknowledgement for its gate and sequence number arrives. So events survive a broker outage,
a gateway outage and a bridge restart, and are sent again in their order; the gateway drops repeats by
gate:seq, which makes "at least once" into "once".

Sequence numbers grow per gate and never restart: each is max(last + 1, clock in ms), so even a bridge whose
outbox file was lost keeps counting upwards and the gateway does not take its new events for repeats.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gateway import contract

Clock = Callable[[], int]  # epoch milliseconds
MEMORY = ":memory:"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, gate TEXT NOT NULL, seq INTEGER NOT NULL, payload BLOB NOT NULL,"
    " UNIQUE (gate, seq))",
    "CREATE TABLE IF NOT EXISTS sequences (gate TEXT PRIMARY KEY, last INTEGER NOT NULL)",
)


def _epoch_ms() -> int:
    return time.time_ns() // 1_000_000


class EventOutbox:
    """A durable, ordered queue of gate events at `path` (created owner-only), or in memory for `:memory:`."""

    def __init__(self, path: str | Path = MEMORY, *, clock: Clock = _epoch_ms) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        if self.path != MEMORY:
            # Gate activity is nobody else's business: create the file owner-only before SQLite opens it.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an event we said we kept survives a power cut
        for statement in _SCHEMA:
            self._db.execute(statement)

    def add(self, gate: str, kind: str, nonce: str = "") -> contract.GateEvent:
        """Record a new event now, with the gate's next sequence number, and return it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT last FROM sequences WHERE gate = ?", (gate,)).fetchone()
                now = self._clock()
                seq = max(row[0] + 1, now) if row else now
                event = contract.GateEvent(gate=gate, kind=kind, seq=seq, at_ms=now, nonce=nonce)
                self._db.execute(
                    "INSERT INTO events (gate, seq, payload) VALUES (?, ?, ?)", (gate, seq, event.to_json())
                )
                self._db.execute(
                    "INSERT INTO sequences (gate, last) VALUES (?, ?) ON CONFLICT (gate) DO UPDATE SET last = ?",
                    (gate, seq, seq),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return event

    def head(self, gate: str) -> contract.GateEvent | None:
        """The gate's oldest event not yet confirmed."""
        with self._lock:
            row = self._db.execute("SELECT payload FROM events WHERE gate = ? ORDER BY id LIMIT 1", (gate,)).fetchone()
        return None if row is None else contract.GateEvent.from_json(bytes(row[0]))

    def pending(self, gate: str | None = None) -> list[contract.GateEvent]:
        """Every event not yet confirmed, oldest first (one gate's, or all)."""
        with self._lock:
            if gate is None:
                rows = self._db.execute("SELECT payload FROM events ORDER BY id").fetchall()
            else:
                rows = self._db.execute("SELECT payload FROM events WHERE gate = ? ORDER BY id", (gate,)).fetchall()
        return [contract.GateEvent.from_json(bytes(r[0])) for r in rows]

    def confirm(self, gate: str, seq: int) -> bool:
        """The gateway has the event: forget it. False when it was not (or no longer) here."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM events WHERE gate = ? AND seq = ?", (gate, seq))
        return cursor.rowcount > 0

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()
