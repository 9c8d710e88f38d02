"""Composition root of the reader agent: site, keys, camera, decoder and gateway link wired together."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway import contract
from gateway.metrics_server import serve
from gateway.mqttlink import BrokerAddress
from gateway.site import Site
from readers.agent import Outcome, ReaderAgent
from readers.capture import open_source
from readers.decoding import Decoder, EngineName, to_gray
from readers.gate_page_run import GatePageService
from readers.gateway_link import HEARTBEAT_S, GatewayLink
from readers.metrics import ReaderMetrics
from readers.offline import OfflineOperation
from readers.offline_site import SiteKnowledge
from readers.offline_store import OfflineStore

log = logging.getLogger(__name__)


def load_decision_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        key = contract.public_key_from_pem(path.read_bytes())
        keys[contract.key_id(key)] = key
    return keys


def paced(frames: Iterable[np.ndarray], fps: float) -> Iterator[np.ndarray]:
    """Hand out frames no faster than `fps`, as a camera would (for files played as if live)."""
    period = 1.0 / fps
    next_at = time.monotonic()
    for frame in frames:
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_at = max(next_at + period, time.monotonic() - period)
        yield frame


def format_outcome(reader: str, outcome: Outcome) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    verdict = "ALLOW" if outcome.allow else "DENY "
    line = f"{stamp}  {reader}  {verdict}  {outcome.reason:<20} badge={outcome.badge or '-'}"
    return line + "  [OFFLINE]" if outcome.mode == "offline" else line


def run_reader(
    site: Site,
    reader_code: str,
    source: str,
    address: BrokerAddress,
    decision_keys: contract.DecisionKeys,
    engine: EngineName = "auto",
    fps: float | None = None,
    answer_timeout_s: float = 1.5,
    echo: bool = True,
    heartbeat_s: float = HEARTBEAT_S,
    metrics_address: tuple[str, int] | None = None,
    store_path: Path | None = None,
    offline_key: Ed25519PrivateKey | None = None,
    upload_wait_s: float = 3.0,
    gate_page: tuple[str, int] | None = None,
    gate_page_idle_s: float = 300.0,
) -> ReaderAgent:
    """Read frames from `source` until it ends, deciding each badge presentation once; the reader's status
    (online with counters every `heartbeat_s`, offline at the end or as its last will) is kept retained.
    With `metrics_address` (host, port), Prometheus metrics are served there while the reader runs.
    With `store_path` (local SQLite), the reader decides by its gate's offline policy when the gateway does not
    answer (signing with `offline_key`), keeps those decisions and uploads them; at the end it waits up to
    `upload_wait_s` for the gateway to acknowledge what is still queued (what is not stays in the store).
    With `gate_page` (host, port), the guard's gate page is served there (docs/gate_page.md)."""
    reader = site.readers[reader_code]
    metrics = ReaderMetrics(reader.code, reader.gate)

    page: GatePageService | None = None

    def on_outcome(outcome: Outcome) -> None:
        metrics.on_outcome(outcome)
        if page is not None:
            page.on_outcome(outcome)
        if echo:
            print(format_outcome(reader.code, outcome), flush=True)

    def clock_ms() -> int:
        return int(time.time() * 1000)

    def show_mode(_mode: str) -> None:
        # The switch shows at once in the retained status, not at the next heartbeat.
        if link.online:
            link.publish_status("online")

    offline = None
    if store_path is not None:
        store = OfflineStore(store_path)
        offline = OfflineOperation(
            reader.code,
            store,
            SiteKnowledge(site, store, decision_keys),
            offline_key,
            clock_ms,
            on_mode=show_mode,
        )
    link = GatewayLink(
        address,
        reader.code,
        reader.gate,
        decision_keys,
        clock_ms,
        heartbeat_s,
        on_site_message=offline.knowledge.receive if offline is not None else None,
        on_offline_ack=offline.acknowledged if offline is not None else None,
    )
    if gate_page is not None:
        page = GatePageService(
            address, reader.code, reader.gate, decision_keys, link.forward_to_bridge, gate_page, gate_page_idle_s
        )
    agent = ReaderAgent(
        reader.code,
        page.tap(Decoder(engine)) if page is not None else Decoder(engine),
        link,
        to_gray,
        clock_s=time.monotonic,
        on_outcome=on_outcome,
        answer_timeout_s=answer_timeout_s,
        offline=offline,
    )
    metrics.watch(agent, link)
    link.start(counters=agent)
    if page is not None:
        page.start()
    if offline is not None:
        offline.start(link)
    server = None
    try:
        server = serve(metrics.registry, *metrics_address) if metrics_address else None
        with open_source(source) as frames:
            agent.run(paced(frames, fps) if fps else frames)
    finally:
        if page is not None:
            page.stop()
        if offline is not None:
            if offline.queued and link.online:
                offline.drain(upload_wait_s)
            offline.stop()
        link.stop()
        if offline is not None:
            offline.store.close()
        if server is not None:
            server.stop()
    return agent
