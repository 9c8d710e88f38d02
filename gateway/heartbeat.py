"""The decision process's liveness heartbeat, kept in the database where the web side can read it.

Each decision worker upserts one `site_state` row, `heartbeat:decision:<worker>`, every `interval_s`: when
(`changed_at`) and whether its MQTT link is up (`value`, JSON). A clean stop marks it "stopped"; a crashed or
hung worker simply stops refreshing it, and the web's readiness check calls a heartbeat older than
`STALE_AFTER_S` dead. Heartbeats are not audited (they change nothing); they are not site settings either,
hence their own key prefix.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.db.models import SiteState

log = logging.getLogger(__name__)

KEY_PREFIX = "heartbeat:decision:"
INTERVAL_S = 5.0
STALE_AFTER_S = 3 * INTERVAL_S
MAX_WORKER_CHARS = 48 - len(KEY_PREFIX)  # site_state.key is 48 characters


@dataclass(frozen=True)
class WorkerBeat:
    worker: str
    at: dt.datetime
    state: str  # "running" or "stopped"
    broker: bool  # the worker's MQTT link was up when it wrote this

    def alive(self, now: dt.datetime, stale_after_s: float = STALE_AFTER_S) -> bool:
        return self.state == "running" and (now - self.at).total_seconds() <= stale_after_s


def read_beats(session: Session) -> list[WorkerBeat]:
    rows = session.scalars(select(SiteState).where(SiteState.key.startswith(KEY_PREFIX)).order_by(SiteState.key))
    beats = []
    for row in rows:
        try:
            value = json.loads(row.value)
        except ValueError:
            value = {}
        beats.append(
            WorkerBeat(
                row.key.removeprefix(KEY_PREFIX),
                row.changed_at,
                str(value.get("state", "unknown")),
                bool(value.get("broker", False)),
            )
        )
    return beats


class Heartbeat:
    """A decision-process component: writes the worker's heartbeat row now and every `interval_s`."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        worker: str,
        broker_up: Callable[[], bool],
        clock: Callable[[], dt.datetime],
        interval_s: float = INTERVAL_S,
        on_beat: Callable[[dt.datetime], None] = lambda _at: None,
    ) -> None:
        if len(worker) > MAX_WORKER_CHARS:
            raise ValueError(f"worker name {worker!r} is longer than {MAX_WORKER_CHARS} characters")
        self.sessions = sessions
        self.worker = worker
        self.broker_up = broker_up
        self.clock = clock
        self.interval_s = interval_s
        self.on_beat = on_beat
        self._quiet = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, state: str = "running") -> None:
        now = self.clock()
        value = json.dumps({"state": state, "broker": self.broker_up()}, separators=(",", ":"))
        with self.sessions() as s, s.begin():
            s.merge(SiteState(key=KEY_PREFIX + self.worker, value=value, changed_at=now, changed_by=self.worker))
        self.on_beat(now)

    def _run(self) -> None:
        while not self._quiet.wait(self.interval_s):
            try:
                self.beat()
            except Exception:  # the database may be away for a while; the beat goes on when it is back
                log.exception("decision worker %s: heartbeat not recorded", self.worker)

    def start(self) -> None:
        self.beat()
        self._quiet.clear()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.worker}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._quiet.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        try:
            self.beat("stopped")
        except Exception:
            log.exception("decision worker %s: could not record its stop", self.worker)
