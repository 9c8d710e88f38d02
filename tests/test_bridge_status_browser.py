"""The operations page in a real browser (Debian's chromium through Playwright) shows each bridge from its live
retained status: online with its outbox length and controller link per gate, then offline once it stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from werkzeug.serving import make_server

from firmware_bridge.sim import SimulatedGate, start_simulated_gate
from gateway import contract
from gateway.broker_setup import GATEWAY_USER, BrokerFiles, bridge_user
from gateway.cli import add_operator
from gateway.mqttlink import BrokerAddress
from gateway.site import Site
from gateway.status_board import StatusBoard
from gateway.web import create_app
from tests.test_bridge_status import clear_status
from tests.test_desk_browser import browser, log_in, shot  # noqa: F401  (the browser fixture)

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]
GATE = "STA-G1"
BRIDGE = bridge_user(GATE)
ROW = f'[id="bridge-{BRIDGE}"]'  # the bridge's account has a dot: not an #id selector
WAIT_S = 10.0  # generous: a slow CI machine, never a timing assertion


def _address(broker: BrokerFiles, user: str) -> BrokerAddress:
    return BrokerAddress("127.0.0.1", broker.port, user, broker.password(user))


def _wait_until(what: str, condition: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def web(instance, broker: BrokerFiles) -> Iterator[tuple[str, StatusBoard]]:  # type: ignore[no-untyped-def]
    add_operator(instance, "lead1", "lead", "lead-password-1")
    app = create_app(instance.folder, {"BROKER_ADDRESS": _address(broker, GATEWAY_USER)})
    board: StatusBoard = app.extensions["accessgw_status_board"]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", board
    server.shutdown()
    board.stop()


@pytest.fixture
def gate(site: Site, broker: BrokerFiles) -> Iterator[SimulatedGate]:
    clear_status(broker, BRIDGE)
    public = Ed25519PrivateKey.generate().public_key()
    sim = start_simulated_gate(site, GATE, {contract.key_id(public): public}, _address(broker, BRIDGE))
    try:
        yield sim
    finally:
        sim.stop()
        clear_status(broker, BRIDGE)


def test_lead_sees_a_bridge_online_with_its_outbox_then_offline(  # type: ignore[no-untyped-def]
    web: tuple[str, StatusBoard], gate: SimulatedGate, browser, tmp_path  # noqa: F811
) -> None:
    base, board = web

    def heard(state: str) -> bool:
        got = board.bridges().get(BRIDGE)
        return got is not None and got.status.state == state

    _wait_until("the web never heard the bridge online", lambda: heard("online"))
    page = browser.new_page()
    log_in(page, base, "lead1", "lead-password-1")
    page.click("nav.main >> text=Operations")
    page.wait_for_selector("#bridges")
    shot(page, tmp_path, "operations-bridge-online")

    assert page.inner_text(f"{ROW} td.state") == "online"
    # Nobody acknowledges events in this test: the controller's start-up "online" event waits in the outbox.
    assert int(page.inner_text(f"{ROW} td.outbox")) == len(gate.outbox) >= 1
    assert page.inner_text(f'{ROW} .controller[data-gate="{GATE}"] .state') == "up"
    assert page.inner_text(f"{ROW} td.age").endswith(" s")
    online_before, heard_before = _card(page)

    gate.bridge.stop()
    _wait_until("the web never heard the bridge offline", lambda: heard("offline"))
    page.reload()
    page.wait_for_selector("#bridges")
    shot(page, tmp_path, "operations-bridge-offline")
    assert page.inner_text(f"{ROW} td.state") == "offline"
    assert _card(page) == (online_before - 1, heard_before)  # other tests' bridges may be listed too


def _card(page: Any) -> tuple[int, int]:
    """Bridges online / bridges heard, from the summary card."""
    online, heard = page.inner_text("#card-bridges b").split(" / ")
    return int(online), int(heard)
