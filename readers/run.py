"""Composition root of the reader agent: site, keys, camera, decoder and gateway link wired together."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway import contract
from gateway.mqttlink import BrokerAddress
from gateway.site import Site
from readers.agent import Outcome, ReaderAgent
from readers.capture import open_source
from readers.decoding import Decoder, EngineName, to_gray
from readers.gateway_link import HEARTBEAT_S, GatewayLink

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
    return f"{stamp}  {reader}  {verdict}  {outcome.reason:<20} badge={outcome.badge or '-'}"


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
) -> ReaderAgent:
    """Read frames from `source` until it ends, deciding each badge presentation once; the reader's status
    (online with counters every `heartbeat_s`, offline at the end or as its last will) is kept retained."""
    reader = site.readers[reader_code]
    link = GatewayLink(
        address, reader.code, reader.gate, decision_keys, lambda: int(time.time() * 1000), heartbeat_s
    )
    agent = ReaderAgent(
        reader.code,
        Decoder(engine),
        link,
        to_gray,
        clock_s=time.monotonic,
        on_outcome=(lambda o: print(format_outcome(reader.code, o), flush=True)) if echo else (lambda o: None),
        answer_timeout_s=answer_timeout_s,
    )
    link.start(counters=agent)
    try:
        with open_source(source) as frames:
            agent.run(paced(frames, fps) if fps else frames)
    finally:
        link.stop()
    return agent
