"""The live monitor in a real browser (Debian's chromium through Playwright): a decision and an alarm written to the
audit by another process appear on two leads' open pages without reload; one lead acknowledges the alarm, and it is
logged and cleared on both pages."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from gateway.cli import add_operator
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry
from gateway.web import create_app
from tests.factories import badged_holder
from tests.test_desk_browser import CHROMIUM, CHROMIUM_ARGS, log_in, shot
from tests.test_monitor import NOW

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

# Run in a separate Python process, as the decision process would: one decision, then a forced door.
WRITER = """
import datetime as dt, secrets, sys
from pathlib import Path
from gateway import contract
from gateway.db.engine import make_engine, session_factory
from gateway.gate_events import GateEventService
from gateway.instance import load_instance
from gateway.site import load_site
from tests.factories import decision_service

instance = load_instance(Path(sys.argv[1]))
now = dt.datetime.fromisoformat(sys.argv[3])
service = decision_service(instance, load_site(instance.settings.site_file), lambda: now)
service.answer(contract.DecisionRequest("STA-G1-IN", secrets.token_hex(16), sys.argv[2], 0))
sessions = session_factory(make_engine(instance.settings.database_url))
GateEventService(sessions=sessions, clock=lambda: now).record(
    contract.GateEvent(gate="STA-G6", kind="door_forced", seq=1, at_ms=int(now.timestamp() * 1000))
)
"""


@pytest.fixture
def live_server(instance) -> Iterator[str]:  # type: ignore[no-untyped-def]
    add_operator(instance, "lead1", "lead", "lead-password-1")
    add_operator(instance, "lead2", "lead", "lead-password-2")
    # Streams of one second: the pages reconnect (with Last-Event-ID) several times during the test.
    server = make_server("127.0.0.1", 0, create_app(instance.folder, {"MONITOR_STREAM_SECONDS": 1}), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_decisions_and_alarms_appear_live_and_an_acknowledgement_clears_them_for_every_lead(  # type: ignore[no-untyped-def]
    live_server: str, instance, site, tmp_path
) -> None:
    from playwright.sync_api import sync_playwright

    badge = badged_holder(instance, site, ["STADIUM-PERIMETER"], NOW, name=("Moreau", "Julie"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pages = []
            for user, password in (("lead1", "lead-password-1"), ("lead2", "lead-password-2")):
                page = browser.new_context().new_page()
                log_in(page, live_server, user, password)
                page.goto(f"{live_server}/monitor")
                page.wait_for_selector("#live.on")
                assert page.inner_text("#no-open") == "No alarm waiting."
                pages.append(page)
            one, two = pages

            subprocess.run(
                [sys.executable, "-c", WRITER, str(instance.folder), badge.token, NOW.isoformat()],
                check=True,
                timeout=60,
            )
            with session_factory(make_engine(instance.settings.database_url))() as s:
                decision = s.scalar(select(AuditEntry.seq).where(AuditEntry.kind == "decision"))
                alarm = s.scalar(select(AuditEntry.seq).where(AuditEntry.kind == "gate_event"))

            for page in pages:  # no reload: the rows come through the stream
                row = page.wait_for_selector(f'#feed tr.decision[data-seq="{decision}"]', timeout=15_000)
                assert "ALLOW granted" in row.inner_text() and "MOREAU Julie" in row.inner_text()
                waiting = page.wait_for_selector(f'#open-alarms tr.unacknowledged[data-seq="{alarm}"]')
                assert "door forced" in waiting.inner_text() and "not acknowledged" in waiting.inner_text()
                assert page.inner_text("#open-count") == "1"
            shot(one, tmp_path, "monitor-alarm")

            one.click(f'#open-alarms tr[data-seq="{alarm}"] button')
            for page in pages:
                page.wait_for_selector(f'#open-alarms tr[data-seq="{alarm}"]', state="detached", timeout=15_000)
                page.wait_for_selector(f'#feed tr.ack >> text="alarm {alarm} acknowledged"')
                assert page.inner_text(f'#feed tr.alarm[data-seq="{alarm}"] .state') == "acknowledged by lead1"
                assert page.inner_text("#open-count") == "0" and page.is_visible("#no-open")
            shot(two, tmp_path, "monitor-acknowledged")

            two.reload()  # and it stays cleared
            two.wait_for_selector("#live.on")
            assert two.query_selector(f'#open-alarms tr[data-seq="{alarm}"]') is None
        finally:
            browser.close()
    with session_factory(make_engine(instance.settings.database_url))() as s:
        acks = s.execute(select(AuditEntry.operator, AuditEntry.ref).where(AuditEntry.kind == "alarm_ack")).all()
    assert [tuple(a) for a in acks] == [("lead1", str(alarm))]
