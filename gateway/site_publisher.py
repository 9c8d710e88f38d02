"""Publishes what readers need to decide on their own, as retained messages signed with the decision key.

The desk and the leads only write the database; this publisher, running in the decision process, watches it
(every `interval_s`) and publishes a new version of a message when its content changed, so a revocation
reaches online readers within about a second. After a reconnect everything is published again, because a
broker restarted without persistence has forgotten its retained messages.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Select, func, select, union_all
from sqlalchemy.orm import Session, sessionmaker

from gateway import contract
from gateway.db.models import AuditEntry, Holder, Revocation
from gateway.decisions import current_threat_level
from gateway.instance import Keyring
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client
from gateway.site import Site

log = logging.getLogger(__name__)


def keys_body(keyring: Keyring, issuer: str) -> dict[str, Any]:
    keys = []
    for kid, pub in sorted(keyring.badge_public.items()):
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        keys.append({"kid": kid, "x": contract.b64url(raw)})
    return {"issuer": issuer, "badge_keys": keys}


REVOCATION_KINDS = ("badge_revoked", "holder_suspended", "holder_reinstated")


def revocation_version_query() -> Select[tuple[int | None]]:
    """The newest entry of each kind on its own (`kind = ?`: the newest entry of the (kind, seq) index), then the
    greatest of those. With `kind IN (...)` PostgreSQL walked the audit backwards from its newest entry until it
    met one of these kinds: every entry when there was none, twice a second in each decision process (112 ms at
    314,000 entries, and growing with the audit)."""
    newest = union_all(
        *(select(func.max(AuditEntry.seq).label("seq")).where(AuditEntry.kind == kind) for kind in REVOCATION_KINDS)
    ).subquery()
    return select(func.max(newest.c.seq))


def revocation_version(session: Session) -> int:
    """The audit sequence number of the latest revocation, suspension or reinstatement: it only grows, and every
    gateway process computes the same one."""
    return session.scalar(revocation_version_query()) or 0


def revocations(session: Session) -> dict[str, list[str]]:
    """What no gate may open for: revoked badges and suspended holders."""
    badge_ids = sorted(session.scalars(select(Revocation.badge_id)))
    suspended = sorted(session.scalars(select(Holder.id).where(Holder.status != "active")))
    return {"badges": badge_ids, "holders": suspended}


def threat_state(session: Session, site: Site) -> tuple[int, str]:
    seq = session.scalar(select(func.max(AuditEntry.seq)).where(AuditEntry.kind == "threat_level")) or 0
    return seq, current_threat_level(session, site)


class SitePublisher:
    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        site: Site,
        site_text: str,
        keyring: Callable[[], Keyring],
        issuer: str,
        sessions: sessionmaker[Session],
        clock_ms: Callable[[], int],
        interval_s: float = 0.5,
    ) -> None:
        self.address = address
        self.site = site
        self.site_text = site_text
        self.keyring = keyring
        self.issuer = issuer
        self.sessions = sessions
        self.clock_ms = clock_ms
        self.interval_s = interval_s
        self.published: dict[str, tuple[int, str]] = {}  # kind -> (version, content digest) last sent
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="site-publisher", daemon=True)
        self.client = make_client(address, client_id, on_link=self._on_link)

    def start(self) -> None:
        connect_and_wait(self.client, self.address)
        self.publish_changes()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_link(self, up: bool) -> None:
        if up:
            with self._lock:
                self.published.clear()  # the broker may have lost its retained messages: send all again

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.publish_changes()
            except Exception:  # the database or broker may be away for a while; keep trying
                log.exception("site publisher: could not publish")

    def publish_changes(self) -> None:
        """Publish every kind whose content differs from what was last sent."""
        keyring = self.keyring()
        now = self.clock_ms()
        digest = hashlib.sha256(self.site_text.encode()).hexdigest()
        bodies: dict[str, tuple[int, dict[str, Any]]] = {
            "config": (now, {"zones_yaml": self.site_text, "sha256": digest}),
            "keys": (now, keys_body(keyring, self.issuer)),
        }
        with self.sessions() as session:
            version = revocation_version(session)
            with self._lock:
                sent = self.published.get("revocations", (None, None))[0]
            if version != sent:  # the whole list is read only when it changed
                bodies["revocations"] = (version, revocations(session))
            threat_version, level = threat_state(session, self.site)
            bodies["threat_level"] = (threat_version, {"level": level})
        for kind, (version, body) in bodies.items():
            content = hashlib.sha256(repr(sorted(body.items())).encode()).hexdigest()
            with self._lock:
                if self.published.get(kind, (None, None))[1] == content:
                    continue
            message = contract.sign_site_message(
                contract.SiteMessage(kind=kind, version=version, issued_ms=now, body=body, kid=""),
                keyring.decision_signing,
            )
            info = self.client.publish(contract.SITE_TOPICS[kind], message.to_json(), qos=1, retain=True)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                continue  # not connected: try again on the next round
            with self._lock:
                self.published[kind] = (version, content)
            log.info("published %s version %d", kind, version)
