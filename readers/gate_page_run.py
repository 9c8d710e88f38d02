"""The gate page as one part of the reader process: its gateway link, the guard's post and the HTTP server."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway import contract
from gateway.mqttlink import BrokerAddress
from readers.agent import Decoder, Outcome
from readers.gate_page import IDLE_S, GatePost, GuardBadgeTap
from readers.gate_page_http import GatePageServer
from readers.manual_link import GuardLink


class GatePageService:
    def __init__(
        self,
        address: BrokerAddress,
        reader: str,
        gate: str,
        decision_keys: contract.DecisionKeys,
        forward: Callable[[contract.DecisionAnswer], None],
        listen: tuple[str, int],
        idle_s: float = IDLE_S,
    ) -> None:
        def clock_ms() -> int:
            return int(time.time() * 1000)

        self.link = GuardLink(address, reader, decision_keys, clock_ms)
        self.post = GatePost(reader, gate, self.link, forward, decision_keys, time.monotonic, clock_ms, idle_s)
        self.server = GatePageServer(listen, self.post)

    def tap(self, decoder: Decoder) -> Decoder:
        """The reader's decoder, with the guard's own badge taken out while they log in by camera."""
        return GuardBadgeTap(decoder, self.post)

    def on_outcome(self, outcome: Outcome) -> None:
        self.post.on_outcome(outcome)

    def start(self) -> None:
        self.link.start()
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        self.link.stop()
