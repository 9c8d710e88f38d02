"""The reader's local SQLite file: what it needs to decide offline, and what it decided offline.

- `site_messages`: the last verified retained site message of each kind (keys, revocations, threat level,
  site file), raw as received, so a restarted reader can decide offline at once (re-verified when read back);
- `offline_decisions`: every decision taken offline, written (and committed) before the turnstile is told,
  deleted only when the gateway has acknowledged it;
- `local_entries`: holders this reader let in while offline, for local anti-passback (the bridge tells only
  the gateway about passages, so a grant counts as an entry here; forgotten once the gateway is back).

One connection, used under a lock: the agent's thread writes decisions, paho's network thread writes site
messages and acknowledgements. Nothing is opened at import time.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from gateway import contract

_SCHEMA = """
CREATE TABLE IF NOT EXISTS site_messages (
    kind TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS offline_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    nonce TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS local_entries (
    holder TEXT PRIMARY KEY,
    zone TEXT NOT NULL,
    since_ms INTEGER NOT NULL
);
"""


class OfflineStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # WAL with synchronous FULL: a decision written here survives a power cut once commit returns.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- retained site messages --------------------------------------------------------------------

    def keep_site_message(self, kind: str, version: int, payload: bytes) -> bool:
        """Keep `payload` as the `kind` message unless one of a higher version is kept; True when kept."""
        with self._lock:
            row = self._db.execute("SELECT version FROM site_messages WHERE kind = ?", (kind,)).fetchone()
            if row is not None and row[0] > version:
                return False
            self._db.execute(
                "INSERT INTO site_messages (kind, version, payload) VALUES (?, ?, ?) "
                "ON CONFLICT (kind) DO UPDATE SET version = excluded.version, payload = excluded.payload",
                (kind, version, payload),
            )
            return True

    def site_messages(self) -> dict[str, bytes]:
        with self._lock:
            rows = self._db.execute("SELECT kind, payload FROM site_messages").fetchall()
        return {str(kind): bytes(payload) for kind, payload in rows}

    # --- the queue of offline decisions ------------------------------------------------------------

    def add_decision(self, decision: contract.OfflineDecision) -> None:
        """Committed when this returns (autocommit): the decision survives a crash from here on."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO offline_decisions (nonce, payload) VALUES (?, ?)",
                (decision.nonce, decision.to_json()),
            )

    def pending(self, limit: int) -> list[contract.OfflineDecision]:
        """The oldest decisions not yet acknowledged by the gateway."""
        with self._lock:
            rows = self._db.execute("SELECT payload FROM offline_decisions ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [contract.OfflineDecision.from_json(bytes(row[0])) for row in rows]

    def acknowledged(self, nonce: str) -> bool:
        """The gateway has it: forget it. False when it was not (or no longer) queued."""
        with self._lock:
            return self._db.execute("DELETE FROM offline_decisions WHERE nonce = ?", (nonce,)).rowcount > 0

    def queued(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM offline_decisions").fetchone()
        return int(row[0])

    # --- local anti-passback -----------------------------------------------------------------------

    def record_entry(self, holder: str, zone: str, since_ms: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO local_entries (holder, zone, since_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (holder) DO UPDATE SET zone = excluded.zone, since_ms = excluded.since_ms",
                (holder, zone, since_ms),
            )

    def entry_of(self, holder: str) -> tuple[str, int] | None:
        with self._lock:
            row = self._db.execute("SELECT zone, since_ms FROM local_entries WHERE holder = ?", (holder,)).fetchone()
        return (str(row[0]), int(row[1])) if row is not None else None

    def forget_entries(self) -> None:
        """The gateway is back and knows the confirmed passages: its anti-passback applies again."""
        with self._lock:
            self._db.execute("DELETE FROM local_entries")
