"""What the gateway told this reader for offline use: retained, signed site messages, kept in the local store.

A message counts only if a pinned decision key signed it, and only the highest version of each kind is kept
(an older one replayed by anyone is ignored). Kept messages are verified again when read back at start-up.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway import contract
from gateway.site import Site, SiteError, parse_site
from readers.offline_store import OfflineStore

log = logging.getLogger(__name__)

_TOPIC_KINDS = {topic: kind for kind, topic in contract.SITE_TOPICS.items()}


@dataclass(frozen=True)
class Knowledge:
    """A snapshot of what the reader believes, for one offline decision."""

    site: Site  # the gateway's site file when received, else the reader's own --site file
    badge_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    issuer: str = ""
    revoked_badges: frozenset[str] = frozenset()
    suspended_holders: frozenset[str] = frozenset()
    threat_level: str = ""  # "" when never received: the site's default applies
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def level(self) -> str:
        return self.threat_level if self.threat_level in self.site.threat_levels else self.site.default_threat_level


class SiteKnowledge:
    def __init__(self, local_site: Site, store: OfflineStore, decision_keys: contract.DecisionKeys) -> None:
        self.local_site = local_site
        self.store = store
        self.keys = decision_keys
        self._lock = threading.Lock()
        self._messages: dict[str, contract.SiteMessage] = {}
        self._now = Knowledge(local_site)
        for kind, payload in store.site_messages().items():
            self._accept(kind, payload, persist=False)

    @staticmethod
    def kind_of(topic: str) -> str | None:
        return _TOPIC_KINDS.get(topic)

    def receive(self, topic: str, payload: bytes) -> None:
        """A retained site message from the broker: kept if believed and newer than what is held."""
        kind = self.kind_of(topic)
        if kind is not None:
            self._accept(kind, payload, persist=True)

    def _accept(self, kind: str, payload: bytes, *, persist: bool) -> bool:
        try:
            message = contract.SiteMessage.from_json(payload)
        except contract.ContractError as exc:
            log.warning("site message on %s dropped: %s", kind, exc)
            return False
        problem = contract.site_message_problem(message, self.keys)
        if message.kind != kind:
            problem = f"a {message.kind} message on the {kind} topic"
        if problem is not None:
            log.warning("site message %s dropped: %s", kind, problem)
            return False
        with self._lock:
            held = self._messages.get(kind)
            if held is not None and held.version > message.version:
                return False  # an older statement (a replay, or a slower gateway worker): keep the newer
            try:
                snapshot = self._rebuild({**self._messages, kind: message})
            except (SiteError, KeyError, TypeError, ValueError) as exc:
                log.warning("site message %s version %d not usable: %s", kind, message.version, exc)
                return False
            if persist and not self.store.keep_site_message(kind, message.version, payload):
                return False
            self._messages[kind] = message
            self._now = snapshot
        log.info("offline knowledge: %s version %d", kind, message.version)
        return True

    def _rebuild(self, messages: dict[str, contract.SiteMessage]) -> Knowledge:
        site = self.local_site
        config = messages.get("config")
        if config is not None:
            site = parse_site(str(config.body["zones_yaml"]), "the gateway's site file")
        keys = messages.get("keys")
        revocations: dict[str, Any] = dict(messages["revocations"].body) if "revocations" in messages else {}
        threat = messages.get("threat_level")
        return Knowledge(
            site=site,
            badge_keys=contract.badge_keys_from(keys) if keys is not None else {},
            issuer=str(keys.body["issuer"]) if keys is not None else "",
            revoked_badges=frozenset(map(str, revocations.get("badges", []))),
            suspended_holders=frozenset(map(str, revocations.get("holders", []))),
            threat_level=str(threat.body["level"]) if threat is not None else "",
            versions={k: m.version for k, m in messages.items()},
        )

    @property
    def now(self) -> Knowledge:
        with self._lock:
            return self._now
