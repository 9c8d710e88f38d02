"""Writes a signed audit checkpoint at regular intervals from the decision process."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from gateway.audit_verify import checkpoint_now
from gateway.instance import Keyring

log = logging.getLogger(__name__)


class CheckpointWriter:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        path: Path,
        keyring: Callable[[], Keyring],
        clock: Callable[[], dt.datetime],
        interval_s: float = 60.0,
    ) -> None:
        self.sessions = sessions
        self.path = path
        self.keyring = keyring
        self.clock = clock
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop, writing a last checkpoint so that the file covers everything logged until now."""
        self._stop.set()
        self._thread.join(5)
        self.write()

    def write(self) -> None:
        try:
            with self.sessions() as session:
                cp = checkpoint_now(session, self.path, self.keyring().decision_signing, self.clock())
            if cp:
                log.info("audit checkpoint at entry %d", cp.seq)
        except Exception:  # the database may be away for a while; the next round tries again
            log.exception("audit checkpoint not written")

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.write()
