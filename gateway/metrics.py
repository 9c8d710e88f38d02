"""Prometheus metrics of the decision process, hooked in without touching the decision code.

`MeasuredDecisionService` is the DecisionService with one counter increment per answer and one histogram
observation per batch around `answer_many` (the hot path gains a few microseconds, no lock of its own and no
I/O); `MeasuredGateEventService` counts gate events and alarms once they are committed. Each process has its
own registry (`DecisionMetrics.registry`), served on `--metrics-port` by gateway.metrics_server.

Names follow Prometheus conventions: `accessgw_` prefix, `_total` counters, base units, low-cardinality labels
(result, reason code, event kind; never a badge, holder or nonce).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import contract
from gateway.decisions import DecisionService
from gateway.gate_events import GateEventService, Recorded

log = logging.getLogger(__name__)

ALARM_KINDS = ("door_forced", "door_held_open", "tamper", "controller_offline")
# Decision latency as a reader sees it is dominated by the commit: buckets from 1 ms to 2.5 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class DecisionMetrics:
    """The decision process's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            "accessgw_decisions", "Decisions answered, by result and reason code.", ["result", "reason"], registry=r
        )
        self.latency = Histogram(
            "accessgw_decision_duration_seconds",
            "Time to decide, audit (commit) and sign one batch of requests; each request waited this long.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "accessgw_decision_batch_size_requests",
            "Requests decided together in one transaction.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.gate_events = Counter(
            "accessgw_gate_events",
            "Gate events recorded in the audit (repeats not counted), by kind.",
            ["kind"],
            registry=r,
        )
        self.alarms = Counter(
            "accessgw_alarms",
            "Alarms reported by the turnstiles (forced, held open, tamper, controller offline).",
            ["kind"],
            registry=r,
        )
        self.heartbeat = Gauge(
            "accessgw_decision_heartbeat_timestamp_seconds",
            "When this decision process last recorded its liveness heartbeat (Unix time).",
            registry=r,
        )
        for kind in ALARM_KINDS:
            self.alarms.labels(kind)  # present at 0 from the start, so that rate() and alerts see them

    def count_answers(self, answers: Sequence[contract.DecisionAnswer]) -> None:
        for a in answers:
            self.decisions.labels("allow" if a.allow else "deny", a.reason).inc()

    def count_event(self, kind: str) -> None:
        self.gate_events.labels(kind).inc()
        if kind in ALARM_KINDS:
            self.alarms.labels(kind).inc()


@dataclass
class MeasuredDecisionService(DecisionService):
    """The decision service, counted and timed."""

    metrics: DecisionMetrics = field(default_factory=DecisionMetrics)
    # answer_many falls back to answer() one by one after a nonce clash: only the outer call counts.
    _inside: threading.local = field(default_factory=threading.local, repr=False)

    def answer_many(self, requests: Sequence[contract.DecisionRequest]) -> list[contract.DecisionAnswer]:
        if getattr(self._inside, "on", False):
            return super().answer_many(requests)
        started = time.perf_counter()
        self._inside.on = True
        try:
            answers = super().answer_many(requests)
        finally:
            self._inside.on = False
        self.metrics.latency.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(requests))
        self.metrics.count_answers(answers)
        return answers


@dataclass
class MeasuredGateEventService(GateEventService):
    """Gate events counted by kind once committed; a repeat (already audited) is not counted again."""

    metrics: DecisionMetrics = field(default_factory=DecisionMetrics)

    def record(self, event: contract.GateEvent) -> Recorded:
        recorded = super().record(event)
        if not recorded.duplicate:
            self.metrics.count_event(event.kind)
        return recorded


class LinkCollector(Collector):
    """`accessgw_broker_connected{link}`: 1 while an MQTT client is connected, read at scrape time."""

    def __init__(self, links: dict[str, Callable[[], bool]]) -> None:
        self.links = links

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "accessgw_broker_connected", "1 while this process's MQTT link is connected.", labels=["link"]
        )
        for name, up in self.links.items():
            family.add_metric([name], 1.0 if up() else 0.0)
        yield family
