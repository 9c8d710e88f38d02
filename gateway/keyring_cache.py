"""The accepted keys as the instance folder says now: re-read after a key rotation, without a restart."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from gateway.instance import InstanceError, Keyring, load_instance

log = logging.getLogger(__name__)


class ReloadingKeyring:
    """Callable returning the current Keyring; checks the folder at most every `interval_s` seconds."""

    def __init__(self, folder: Path, interval_s: float = 1.0) -> None:
        self.folder = folder
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._stamp = self._read_stamp()
        self._keyring = load_instance(folder).keyring
        self._checked = time.monotonic()

    def _read_stamp(self) -> tuple[int, ...]:
        paths = [self.folder / "gateway.json", self.folder / "keys", *sorted((self.folder / "keys").glob("*"))]
        return tuple(p.stat().st_mtime_ns for p in paths if p.exists())

    def __call__(self) -> Keyring:
        now = time.monotonic()
        if now - self._checked < self.interval_s:
            return self._keyring
        with self._lock:
            self._checked = now
            stamp = self._read_stamp()
            if stamp != self._stamp:
                try:
                    self._keyring = load_instance(self.folder).keyring
                    self._stamp = stamp
                    log.info("keys reloaded: accepted badge keys %s", ", ".join(sorted(self._keyring.badge_public)))
                except InstanceError as exc:  # half-written rotation: keep the keys we have and retry
                    log.error("keys not reloaded: %s", exc)
        return self._keyring
