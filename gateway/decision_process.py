"""Composition root of the decision process: everything `python -m gateway decide` runs, wired once.

- the decision worker: requests in, audited and signed answers out;
- the site publisher: retained signed keys, revocations, threat level and site file for readers;
- the reader monitor: readers and bridges going offline and back (and readers' clock skew), into the audit;
- the gate-event worker: what turnstiles report, into the audit; passages move holders (anti-passback, occupancy);
- the offline-upload worker: decisions readers took while the gateway was away, into the audit (mode offline);
- the guard worker: gate pages' guard logins, holder look-ups, manual and forced decisions;
- the audit checkpoint writer: a signed chain head every minute, outside the database;
- the liveness heartbeat the web's /readyz reads, and Prometheus metrics (gateway/metrics.py) on --metrics-port.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import sys
import time
from pathlib import Path
from typing import Protocol

from gateway.badge_cache import DEFAULT_ENTRIES as DEFAULT_BADGE_CACHE
from gateway.badge_cache import VerifiedBadges
from gateway.broker_setup import GATEWAY_USER
from gateway.checkpoints import CheckpointWriter
from gateway.db.engine import decision_engine, make_engine, session_factory
from gateway.decision_worker import DecisionWorker
from gateway.gate_events import GateEventWorker
from gateway.heartbeat import INTERVAL_S as HEARTBEAT_S
from gateway.heartbeat import Heartbeat
from gateway.instance import Instance
from gateway.keyring_cache import ReloadingKeyring
from gateway.lock_waits import bound_lock_waits
from gateway.manual_decisions import GuardDesk
from gateway.manual_worker import GuardWorker
from gateway.metrics import DecisionMetrics, LinkCollector, MeasuredDecisionService, MeasuredGateEventService
from gateway.metrics_server import MetricsServer, serve
from gateway.mqttlink import BrokerAddress
from gateway.offline_uploads import OfflineUploadService, OfflineUploadWorker
from gateway.positions import passage_hook
from gateway.rate_limit import ReaderRateLimit
from gateway.reader_monitor import ReaderMonitor
from gateway.site import load_site
from gateway.site_publisher import SitePublisher

log = logging.getLogger(__name__)


class Component(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def checkpoint_file(instance: Instance) -> Path:
    return instance.folder / "audit-checkpoints.jsonl"


class DecisionProcess:
    def __init__(
        self,
        instance: Instance,
        address: BrokerAddress,
        worker: str,
        metrics_address: tuple[str, int] | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        rate_limit: ReaderRateLimit | None = None,
        badge_cache: int = DEFAULT_BADGE_CACHE,
    ) -> None:
        site = load_site(instance.settings.site_file)
        sessions = session_factory(make_engine(instance.settings.database_url))
        # Decisions give up on a locked audit within 1 s and deny (not_logged) while the reader still listens.
        decision_sessions = session_factory(bound_lock_waits(decision_engine(instance.settings.database_url)))
        keyring = ReloadingKeyring(instance.folder)
        self.metrics = DecisionMetrics()
        self.metrics_address = metrics_address
        self.metrics_server: MetricsServer | None = None
        service = MeasuredDecisionService(
            site=site,
            keyring=keyring,
            issuer=instance.settings.issuer,
            sessions=decision_sessions,
            clock=utc_now,
            badges=VerifiedBadges(badge_cache),
            metrics=self.metrics,
        )
        self.decisions = DecisionWorker(service, address, client_id=f"gateway-{worker}", rate_limit=rate_limit)
        self.publisher = SitePublisher(
            address,
            f"gateway-{worker}-site",
            site,
            instance.settings.site_file.read_text(encoding="utf-8"),
            keyring,
            instance.settings.issuer,
            sessions,
            lambda: int(time.time() * 1000),
        )
        self.readers = ReaderMonitor(address, f"gateway-{worker}-readers", site, sessions, utc_now)
        self.gate_events = GateEventWorker(
            MeasuredGateEventService(
                sessions=sessions, clock=utc_now, on_event=passage_hook(site), metrics=self.metrics
            ),
            address,
            client_id=f"gateway-{worker}-events",
        )
        self.guards = GuardWorker(  # gate pages: guard login, look-up, manual and forced decisions
            GuardDesk(site, keyring, instance.settings.issuer, sessions, utc_now),
            address,
            client_id=f"gateway-{worker}-guards",
        )
        self.offline_uploads = OfflineUploadWorker(  # decisions readers took offline, audited once each
            OfflineUploadService(site, sessions, utc_now), address, client_id=f"gateway-{worker}-offline"
        )
        self.checkpoints = CheckpointWriter(sessions, checkpoint_file(instance), keyring, utc_now)
        self.heartbeat = Heartbeat(
            sessions,
            worker,
            self.decisions.client.is_connected,
            utc_now,
            heartbeat_s,
            on_beat=lambda at: self.metrics.heartbeat.set(at.timestamp()),
        )
        links = {"decisions": self.decisions.client.is_connected, "events": self.gate_events.client.is_connected}
        self.metrics.registry.register(LinkCollector(links))
        # Started in this order, stopped in reverse: answers flow only once everything else is up.
        self.components: list[Component] = [
            self.checkpoints,
            self.publisher,
            self.readers,
            self.gate_events,
            self.offline_uploads,
            self.guards,
            self.decisions,
            self.heartbeat,  # last: its first beat already says whether the broker link is up
        ]

    def start(self) -> None:
        # The other threads (site publisher, monitors, gate events...) hand the GIL back to the decision thread
        # within 0.5 ms instead of Python's default 5 ms.
        sys.setswitchinterval(0.0005)
        if self.metrics_address is not None:
            self.metrics_server = serve(self.metrics.registry, *self.metrics_address)
        started: list[Component] = []
        try:
            for component in self.components:
                component.start()
                started.append(component)
        except BaseException:
            for component in reversed(started):
                component.stop()
            if self.metrics_server is not None:
                self.metrics_server.stop()
            raise
        # What start-up built lives as long as the process: out of the collector's sight, a full collection takes
        # about 0.4 ms instead of 31 ms, which had held up every answer in flight (docs/performance.md).
        gc.collect()
        gc.freeze()

    def stop(self) -> None:
        gc.unfreeze()  # back in the collector's sight (a process that goes on, as a test's does)
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception:  # stop the others all the same
                log.exception("stopping %s failed", type(component).__name__)
        if self.metrics_server is not None:
            self.metrics_server.stop()


def decision_process(
    instance: Instance,
    host: str,
    port: int,
    password_file: Path,
    worker: str,
    metrics_address: tuple[str, int] | None = None,
    rate_limit: ReaderRateLimit | None = None,
    badge_cache: int = DEFAULT_BADGE_CACHE,
) -> DecisionProcess:
    address = BrokerAddress.from_password_file(host, port, GATEWAY_USER, password_file)
    return DecisionProcess(instance, address, worker, metrics_address, rate_limit=rate_limit, badge_cache=badge_cache)
