"""A reader whose clock is off by minutes: the gateway measures the skew, raises one alarm, records the skew with the
reader's status, clears the alarm when the clock is right again, and decides with its own clock all along.

The tracker alone (gateway/clock_skew.py), then the decision process's parts (ReaderMonitor, DecisionWorker) on the
suite's real Mosquitto and each database, with a real reader link (readers/gateway_link.py) on a skewed clock.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from gateway import contract
from gateway.broker_setup import GATEWAY_USER, BrokerFiles
from gateway.clock_skew import ALARM_REASON, ALARM_THRESHOLD_MS, CLEARED_REASON, ClockSkewTracker, skew_ms
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.decision_worker import DecisionWorker
from gateway.instance import Instance
from gateway.mqttlink import BrokerAddress
from gateway.reader_monitor import ReaderMonitor
from gateway.site import Site
from readers.gateway_link import GatewayLink
from tests.factories import badged_holder, decision_service

READER = "STA-G1-IN"
MINUTES_OFF = 10
DEADLINE_S = 20.0  # generous bound for a loaded machine, never a timing assertion
TRANSIT_MS = 10_000  # what the message's own travel may add to a measured skew, at the very worst


# --- the tracker -------------------------------------------------------------------------------------------


def test_skew_is_the_readers_clock_minus_the_gateways() -> None:
    assert skew_ms(1_000_500, 1_000_000) == 500
    assert skew_ms(1_000_000, 1_000_500) == -500


def test_crossing_the_threshold_either_way_is_reported_once() -> None:
    tracker = ClockSkewTracker(threshold_ms=30_000)
    assert tracker.observe("R1", 1_000_000 + 29_000, 1_000_000) is None  # within: nothing to say
    change = tracker.observe("R1", 1_000_000 - 31_000, 1_000_000)
    assert change is not None and (change.alarm, change.skew_ms) == (True, -31_000)
    assert tracker.observe("R1", 1_000_000 - 600_000, 1_000_000) is None  # still off: no second alarm
    assert tracker.skew_of("R1") == -600_000 and tracker.alarmed() == {"R1"}
    cleared = tracker.observe("R1", 1_000_000 + 100, 1_000_000)
    assert cleared is not None and (cleared.alarm, cleared.skew_ms) == (False, 100)
    assert tracker.alarmed() == set() and tracker.skews() == {"R1": 100}
    assert tracker.skew_of("R2") is None


def test_an_alarm_standing_from_before_is_not_raised_again_but_is_cleared() -> None:
    tracker = ClockSkewTracker()
    tracker.already_alarmed("R1")
    assert tracker.observe("R1", 5_000_000, 1_000_000) is None
    change = tracker.observe("R1", 1_000_000, 1_000_000)
    assert change is not None and not change.alarm


def test_the_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ClockSkewTracker(threshold_ms=0)


# --- on a real broker and database --------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class SkewedClock:
    offset_ms: int

    def __call__(self) -> int:
        return _now_ms() + self.offset_ms


@dataclass
class Gateway:
    instance: Instance
    monitor: ReaderMonitor
    keys: contract.DecisionKeys

    def entries(self, **where: str) -> list[AuditEntry]:
        sessions = session_factory(make_engine(self.instance.settings.database_url))
        with sessions() as s:
            query = select(AuditEntry).where(AuditEntry.reader == READER).order_by(AuditEntry.seq)
            for name, value in where.items():
                query = query.where(getattr(AuditEntry, name) == value)
            return list(s.scalars(query))


@pytest.fixture
def gateway(instance: Instance, site: Site, broker: BrokerFiles) -> Iterator[Gateway]:
    address = BrokerAddress("127.0.0.1", broker.port, GATEWAY_USER, broker.password(GATEWAY_USER))
    tag = secrets.token_hex(3)
    sessions = session_factory(make_engine(instance.settings.database_url))
    monitor = ReaderMonitor(address, f"gw-readers-{tag}", site, sessions, _now)
    worker = DecisionWorker(decision_service(instance, site, _now), address, client_id=f"gw-{tag}")
    monitor.start()
    worker.start()
    pub = instance.keyring.decision_signing.public_key()
    yield Gateway(instance, monitor, {contract.key_id(pub): pub})
    worker.stop()
    monitor.stop()


@pytest.fixture
def reader_link(gateway: Gateway, broker: BrokerFiles, site: Site) -> Iterator[Callable[[int], GatewayLink]]:
    links: list[GatewayLink] = []

    def start(offset_ms: int) -> GatewayLink:
        link = GatewayLink(
            BrokerAddress("127.0.0.1", broker.port, READER, broker.password(READER)),
            READER,
            site.readers[READER].gate,
            gateway.keys,
            clock_ms=SkewedClock(offset_ms),
            heartbeat_s=0.2,
        )
        link.start()
        links.append(link)
        return link

    yield start
    for link in links:
        link.stop()


def wait_for(condition: Callable[[], object]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met before the deadline")
        time.sleep(0.05)


def test_a_reader_minutes_off_raises_one_alarm_recorded_with_its_status_then_cleared(
    gateway: Gateway, reader_link: Callable[[int], GatewayLink]
) -> None:
    off_ms = -MINUTES_OFF * 60_000
    link = reader_link(off_ms)
    skew = gateway.monitor.clock_skew
    wait_for(lambda: skew.skew_of(READER) is not None)
    measured = skew.skew_of(READER)
    assert measured is not None and abs(measured - off_ms) < TRANSIT_MS
    assert READER in skew.alarmed()
    wait_for(lambda: gateway.entries(kind="alarm", reason=ALARM_REASON))
    # The status entry of the reader coming online carries the skew measured on that very message.
    online = gateway.entries(kind="reader_status", reason="reader_online")
    assert online and "clock skew -6" in online[-1].detail, online[-1].detail
    time.sleep(1.0)  # five more heartbeats, all as far off: still a single alarm
    alarms = gateway.entries(kind="alarm", reason=ALARM_REASON)
    assert len(alarms) == 1 and "-600" in alarms[0].detail and alarms[0].gate == "STA-G1"
    # The reader's clock is put right: the alarm clears, once.
    assert isinstance(link.clock_ms, SkewedClock)
    link.clock_ms.offset_ms = 0
    wait_for(lambda: gateway.entries(kind="reader_clock", reason=CLEARED_REASON))
    assert READER not in skew.alarmed()
    measured = skew.skew_of(READER)
    assert measured is not None and abs(measured) < TRANSIT_MS
    time.sleep(0.6)
    assert len(gateway.entries(kind="reader_clock", reason=CLEARED_REASON)) == 1
    assert len(gateway.entries(kind="alarm", reason=ALARM_REASON)) == 1


def test_a_reader_on_time_raises_no_alarm(gateway: Gateway, reader_link: Callable[[int], GatewayLink]) -> None:
    reader_link(0)
    wait_for(lambda: gateway.monitor.clock_skew.skew_of(READER) is not None)
    time.sleep(1.0)  # a few heartbeats
    measured = gateway.monitor.clock_skew.skew_of(READER)
    assert measured is not None and abs(measured) < ALARM_THRESHOLD_MS
    assert gateway.entries(kind="alarm") == []


def test_the_gateway_decides_with_its_own_clock_not_the_readers(
    gateway: Gateway, reader_link: Callable[[int], GatewayLink], site: Site
) -> None:
    """The badge became valid 2 minutes ago; the reader's clock is 10 minutes behind, so by the reader's clock
    the badge is not valid yet. The gateway grants, and stamps the decision with its own time."""
    badge = badged_holder(
        gateway.instance, site, ["STADIUM-PERIMETER"], _now(), valid=(dt.timedelta(minutes=-2), dt.timedelta(days=1))
    )
    link = reader_link(-MINUTES_OFF * 60_000)
    before = _now_ms()
    answer = link.ask(badge.token, timeout_s=DEADLINE_S)
    after = _now_ms()
    assert answer is not None
    assert (answer.allow, answer.reason) == (True, "granted")
    assert before <= answer.decided_ms <= after  # the gateway's clock, not the reader's (10 minutes earlier)
    row = gateway.entries(kind="decision", ref=answer.nonce)[0]
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=dt.UTC)
    assert before - 1 <= int(at.timestamp() * 1000) <= after  # stored to the millisecond

