"""The operations page in a real browser (Debian's chromium through Playwright): a lead sees the decision
workers, each reader's live status from the broker (state, last heartbeat, counters, offline queue), each gate's
controller link and alarms from the audit; desk staff may not open it."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from gateway import contract
from gateway.broker_setup import GATEWAY_USER, BrokerFiles
from gateway.cli import add_operator
from gateway.db.engine import make_engine, session_factory
from gateway.gate_events import GateEventService
from gateway.heartbeat import Heartbeat
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client
from gateway.web import create_app
from tests.test_desk_browser import browser, log_in, shot  # noqa: F401  (the browser fixture)

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]
READER, SILENT_READER, GATE = "STA-G1-IN", "STA-G1-OUT", "STA-G1"


def publish_status(broker: BrokerFiles, status: contract.ReaderStatus | None, reader: str) -> None:
    """As the reader itself: its retained status (None clears it)."""
    address = BrokerAddress("127.0.0.1", broker.port, reader, broker.password(reader))
    client = make_client(address, f"test-{reader}-{time.monotonic_ns()}")
    connect_and_wait(client, address)
    payload = status.to_json() if status is not None else b""
    client.publish(contract.reader_status_topic(reader), payload, qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def live_server(instance, broker: BrokerFiles) -> Iterator[str]:  # type: ignore[no-untyped-def]
    add_operator(instance, "lead1", "lead", "lead-password-1")
    add_operator(instance, "desk1", "desk", "desk-password-1")
    now = dt.datetime.now(dt.UTC)
    sessions = session_factory(make_engine(instance.settings.database_url))
    Heartbeat(sessions, "w1", lambda: True, lambda: now).beat()
    Heartbeat(sessions, "w2", lambda: True, lambda: now - dt.timedelta(minutes=10)).beat()
    events = GateEventService(sessions=sessions, clock=lambda: now)
    at_ms = int(now.timestamp() * 1000)
    for seq, kind in enumerate(("controller_offline", "controller_online", "door_forced"), start=1):
        events.record(contract.GateEvent(gate=GATE, kind=kind, seq=seq, at_ms=at_ms + seq))
    publish_status(broker, contract.ReaderStatus(READER, "online", at_ms, 1200, 37, 5, 2), READER)
    publish_status(broker, contract.ReaderStatus(SILENT_READER, "online", at_ms - 600_000, 10, 1, 1, 0), SILENT_READER)
    address = BrokerAddress("127.0.0.1", broker.port, GATEWAY_USER, broker.password(GATEWAY_USER))
    app = create_app(instance.folder, {"BROKER_ADDRESS": address})
    board = app.extensions["accessgw_status_board"]
    deadline = time.monotonic() + 10
    while len(board.readers()) < 2 or not board.connected:
        assert time.monotonic() < deadline, "the web never heard the retained statuses"
        time.sleep(0.05)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    board.stop()
    for reader in (READER, SILENT_READER):
        publish_status(broker, None, reader)  # leave no status behind for other tests


def test_lead_sees_workers_readers_and_gates(live_server: str, browser, tmp_path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    page = browser.new_page()
    log_in(page, live_server, "lead1", "lead-password-1")
    page.click("nav.main >> text=Operations")
    page.wait_for_selector("#readers")
    shot(page, tmp_path, "operations")

    assert page.inner_text("#worker-w1 td.state") == "alive"
    assert page.inner_text("#worker-w2 td.state") == "no heartbeat"
    assert "1 / 2" in page.inner_text("#card-workers")

    row = f"#reader-{READER}"
    assert page.inner_text(f"{row} td.state") == "online"
    assert page.inner_text(f"{row} td.frames") == "1200"
    assert page.inner_text(f"{row} td.decodes") == "37"
    assert page.inner_text(f"{row} td.decisions") == "5"
    assert page.inner_text(f"{row} td.offline-queue") == "2"
    assert page.inner_text(f"#reader-{SILENT_READER} td.state") == "silent"  # ten minutes without a heartbeat
    assert page.inner_text("#reader-GDN-G2-IN td.state") == "unknown"  # never heard of

    gate = f"#gate-{GATE}"
    assert page.inner_text(f"{gate} td.link") == "up"  # the latest of offline, then online
    assert page.inner_text(f"{gate} td.last-event") == "door_forced"
    assert page.inner_text(f"{gate} td.alarms") == "1"


def test_desk_staff_may_not_open_the_operations_page(live_server: str, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    page = browser.new_page()
    log_in(page, live_server, "desk1", "desk-password-1")
    page.wait_for_selector("nav.main")
    assert page.locator("nav.main >> text=Operations").count() == 0
    response = page.goto(f"{live_server}/operations")
    assert response is not None and response.status == 403
