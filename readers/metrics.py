"""Prometheus metrics of a reader (`python -m readers run --metrics-port`), and the scan's structured log line.

The frame, decode and decision counters are the agent's own, read at scrape time: nothing is added to the
per-frame path. Decode rate is `rate(accessgw_reader_decodes_total[1m])` on the Prometheus side.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.jsonlog import scan
from readers.agent import Outcome

log = logging.getLogger(__name__)


class AgentCounters(Protocol):
    @property
    def frames(self) -> int: ...

    @property
    def decodes(self) -> int: ...

    @property
    def offline_queue(self) -> int: ...


class LinkState(Protocol):
    @property
    def online(self) -> bool: ...

    @property
    def rejected(self) -> int: ...


class _ReaderCollector(Collector):
    def __init__(self, reader: str, agent: AgentCounters, link: LinkState) -> None:
        self.reader, self.agent, self.link = reader, agent, link

    def collect(self) -> Iterable[Metric]:
        labels, value = ["reader"], [self.reader]
        for name, doc, count in (
            ("accessgw_reader_frames", "Camera frames processed since the reader started.", self.agent.frames),
            ("accessgw_reader_decodes", "QR texts read in those frames.", self.agent.decodes),
            ("accessgw_reader_answers_rejected", "Answers dropped: not genuine, not ours, stale.", self.link.rejected),
        ):
            counter = CounterMetricFamily(name, doc, labels=labels)
            counter.add_metric(value, count)
            yield counter
        queue = GaugeMetricFamily(
            "accessgw_reader_offline_queue", "Decisions taken offline and not yet uploaded.", labels=labels
        )
        queue.add_metric(value, self.agent.offline_queue)
        yield queue
        up = GaugeMetricFamily("accessgw_reader_gateway_link_up", "1 while the broker link is up.", labels=labels)
        up.add_metric(value, 1.0 if self.link.online else 0.0)
        yield up


class ReaderMetrics:
    """One reader's registry: its counters, link state, and the decisions it got, by result and reason."""

    def __init__(self, reader: str, gate: str) -> None:
        self.reader = reader
        self.gate = gate
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "accessgw_reader_decisions",
            "Badge presentations decided at this reader, by result and reason code.",
            ["reader", "result", "reason"],
            registry=self.registry,
        )

    def watch(self, agent: AgentCounters, link: LinkState) -> None:
        self.registry.register(_ReaderCollector(self.reader, agent, link))

    def on_outcome(self, outcome: Outcome) -> None:
        """Count one decided presentation and log it with the scan's fields (the reader's line of the scan)."""
        result = "allow" if outcome.allow else "deny"
        self.decisions.labels(self.reader, result, outcome.reason).inc()
        log.info(
            "reader %s: %s %s badge=%s",
            self.reader,
            result,
            outcome.reason,
            outcome.badge or "-",
            extra=scan(self.gate, self.reader, outcome.nonce),
        )
