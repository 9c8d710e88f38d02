"""Composition root of the decision process: everything `python -m gateway decide` runs, wired once.

- the decision worker: requests in, audited and signed answers out;
- the site publisher: retained signed keys, revocations, threat level and site file for readers;
- the reader monitor: readers going offline and back, into the audit;
- the gate-event worker: what turnstiles report, into the audit; passages move holders (anti-passback, occupancy);
- the audit checkpoint writer: a signed chain head every minute, outside the database.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from pathlib import Path
from typing import Protocol

from gateway.broker_setup import GATEWAY_USER
from gateway.checkpoints import CheckpointWriter
from gateway.db.engine import make_engine, session_factory
from gateway.decision_worker import DecisionWorker
from gateway.decisions import DecisionService
from gateway.gate_events import GateEventService, GateEventWorker
from gateway.instance import Instance
from gateway.keyring_cache import ReloadingKeyring
from gateway.mqttlink import BrokerAddress
from gateway.positions import passage_hook
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
    def __init__(self, instance: Instance, address: BrokerAddress, worker: str) -> None:
        site = load_site(instance.settings.site_file)
        sessions = session_factory(make_engine(instance.settings.database_url))
        keyring = ReloadingKeyring(instance.folder)
        service = DecisionService(
            site=site, keyring=keyring, issuer=instance.settings.issuer, sessions=sessions, clock=utc_now
        )
        self.decisions = DecisionWorker(service, address, client_id=f"gateway-{worker}")
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
            GateEventService(sessions=sessions, clock=utc_now, on_event=passage_hook(site)),
            address,
            client_id=f"gateway-{worker}-events",
        )
        self.checkpoints = CheckpointWriter(sessions, checkpoint_file(instance), keyring, utc_now)
        # Started in this order, stopped in reverse: answers flow only once everything else is up.
        self.components: list[Component] = [
            self.checkpoints,
            self.publisher,
            self.readers,
            self.gate_events,
            self.decisions,
        ]

    def start(self) -> None:
        # Each request crosses from paho's network thread to the decision thread and back; with Python's
        # default 5 ms GIL switch interval those hand-offs alone added ~15 ms to the median answer.
        sys.setswitchinterval(0.0005)
        started: list[Component] = []
        try:
            for component in self.components:
                component.start()
                started.append(component)
        except BaseException:
            for component in reversed(started):
                component.stop()
            raise

    def stop(self) -> None:
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception:  # stop the others all the same
                log.exception("stopping %s failed", type(component).__name__)


def decision_process(instance: Instance, host: str, port: int, password_file: Path, worker: str) -> DecisionProcess:
    return DecisionProcess(instance, BrokerAddress.from_password_file(host, port, GATEWAY_USER, password_file), worker)
