"""One gate's logic without MQTT or OSDP (a stand-in controller link, a hand-turned clock), the display texts, and
the outbox that keeps events until the gateway has them."""

from __future__ import annotations

import secrets
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_bridge import display
from firmware_bridge.controller import ControllerError
from firmware_bridge.gate import GateDriver
from firmware_bridge.outbox import EventOutbox
from gateway import contract, core
from gateway.site import Site

GATE, READER = "STA-G1", "STA-G1-IN"
NOW_MS = 1_785_094_200_000


class FakeLink:
    """What GateDriver needs from a ControllerLink, recording the commands."""

    addresses = (1,)

    def __init__(self) -> None:
        self.commands: list[tuple[str, Any, ...]] = []  # type: ignore[misc]
        self.broken = False
        self.secure = True

    def grant(self, address: int, pulse_ms: int, text: str) -> None:
        if self.broken:
            raise ControllerError("controller 1: libosdp refused command 1")
        self.commands.append(("grant", address, pulse_ms, text))

    def deny(self, address: int, text: str) -> None:
        self.commands.append(("deny", address, text))

    def is_secure(self, address: int) -> bool:
        return self.secure


class Rig:
    def __init__(self, site: Site, passage_timeout_s: int = 8) -> None:
        gate = replace(site.gates[GATE], passage_timeout_s=passage_timeout_s)
        self.site = replace(site, gates={**site.gates, GATE: gate})
        self.key = Ed25519PrivateKey.generate()
        self.link = FakeLink()
        self.events: list[tuple[str, str]] = []
        self.now_s = 1000.0
        self.driver = GateDriver(
            self.site,
            GATE,
            self.link,  # type: ignore[arg-type]
            {contract.key_id(self.key.public_key()): self.key.public_key()},
            lambda kind, nonce: self.events.append((kind, nonce)),
            clock=lambda: NOW_MS,
            monotonic=lambda: self.now_s,
        )

    def answer(self, **fields: Any) -> contract.DecisionAnswer:
        unsigned = contract.DecisionAnswer(
            reader=READER,
            gate=GATE,
            nonce=secrets.token_hex(16),
            allow=True,
            reason="granted",
            badge="b",
            decided_ms=NOW_MS,
            expires_ms=NOW_MS + contract.ANSWER_TTL_MS,
            kid="",
        )
        return contract.sign_answer(replace(unsigned, **fields), self.key)

    def send(self, answer: contract.DecisionAnswer) -> str:
        return self.driver.handle_command(answer.to_json()).action

    def later(self, seconds: float) -> None:
        self.now_s += seconds
        self.driver.tick()


@pytest.fixture
def rig(site: Site) -> Rig:
    return Rig(site)


def test_a_grant_pulses_for_the_gates_time_and_says_so_in_two_languages(rig: Rig) -> None:
    assert rig.send(rig.answer()) == "grant"
    assert rig.link.commands == [("grant", 1, 1500, "ACCES AUTORISE / GRANTED")]


def test_a_passage_carries_the_nonce_of_its_grant_and_ends_it(rig: Rig) -> None:
    grant = rig.answer()
    rig.send(grant)
    rig.later(0.8)
    rig.driver.controller_event("passage")
    rig.later(60)
    assert rig.events == [("passage", grant.nonce)]


def test_a_grant_with_no_passage_in_time_becomes_grant_unused(rig: Rig) -> None:
    grant = rig.answer()
    rig.send(grant)
    rig.later(7.9)
    assert rig.events == []
    rig.later(0.2)
    assert rig.events == [("grant_unused", grant.nonce)]
    rig.driver.controller_event("passage")  # too late: nobody's grant any more
    assert rig.events[-1] == ("passage", "")


def test_a_passage_reported_after_the_next_grant_belongs_to_the_first(rig: Rig) -> None:
    first, second = rig.answer(), rig.answer()
    rig.send(first)
    rig.later(0.8)
    rig.send(second)  # the next person badges before the controller's report of the first passage arrives
    rig.later(0.1)
    rig.driver.controller_event("passage")
    rig.later(9)
    assert rig.events == [("passage", first.nonce), ("grant_unused", second.nonce)]


def test_a_passage_long_after_an_abandoned_grant_belongs_to_the_newer_one(rig: Rig) -> None:
    walked_away, came = rig.answer(), rig.answer()
    rig.send(walked_away)
    rig.later(4)  # its 1.5 s release is long over
    rig.send(came)
    rig.later(0.7)
    rig.driver.controller_event("passage")
    rig.later(9)
    assert sorted(rig.events) == sorted([("passage", came.nonce), ("grant_unused", walked_away.nonce)])


def test_a_grant_the_controller_never_got_is_unused_at_once(rig: Rig) -> None:
    rig.link.broken = True
    grant = rig.answer()
    outcome = rig.driver.handle_command(grant.to_json())
    assert (outcome.action, outcome.nonce) == ("grant", grant.nonce)
    assert "refused" in outcome.detail
    assert rig.events == [("grant_unused", grant.nonce)]
    rig.later(60)
    assert len(rig.events) == 1


def test_a_deny_shows_red_with_a_short_bilingual_reason(rig: Rig) -> None:
    assert rig.send(rig.answer(allow=False, reason="revoked")) == "deny"
    assert rig.link.commands == [("deny", 1, "REFUSE/DENIED REVOQUE/REVOKED")]
    assert rig.events == []


def test_an_answer_is_acted_on_once(rig: Rig) -> None:
    grant = rig.answer()
    assert rig.send(grant) == "grant"
    assert rig.send(grant) == "ignored"
    assert len(rig.link.commands) == 1


def test_the_controllers_state_is_reported_on_change_only(rig: Rig) -> None:
    for kind in ("controller_online", "controller_online", "controller_offline", "controller_online"):
        rig.driver.controller_event(kind)
    assert [k for k, _ in rig.events] == ["controller_online", "controller_offline", "controller_online"]
    rig.driver.report_controller_state_once()
    assert len(rig.events) == 3


@pytest.mark.parametrize("reason", [r.value for r in core.Reason if r is not core.Reason.GRANTED])
def test_every_denial_text_fits_the_display(reason: str) -> None:
    text = display.deny_text(reason)
    assert text.startswith("REFUSE/DENIED ") and len(text) <= 32
    assert text.isascii() and text == text.upper()


def test_an_unknown_reason_shows_itself_cut_to_the_display() -> None:
    assert display.deny_text("a_new_reason_with_a_very_long_name") == "REFUSE/DENIED A NEW REASON WITH"
    assert len(display.grant_text()) <= 32


# --- outbox --------------------------------------------------------------------------------------------


def test_the_outbox_keeps_events_in_order_per_gate_until_confirmed(tmp_path: Path) -> None:
    clock = [NOW_MS]
    box = EventOutbox(tmp_path / "outbox.sqlite", clock=lambda: clock[0])
    a = box.add(GATE, "tamper")
    b = box.add(GATE, "door_forced")
    c = box.add("STA-G2", "tamper")
    assert a.seq == NOW_MS and b.seq == NOW_MS + 1  # same millisecond: still increasing
    assert c.seq == NOW_MS  # each gate counts for itself
    assert [e.kind for e in box.pending(GATE)] == ["tamper", "door_forced"]
    assert box.head(GATE) == a
    assert box.confirm(GATE, a.seq) and not box.confirm(GATE, a.seq)
    assert box.head(GATE) == b and len(box) == 2
    box.close()
    assert stat.S_IMODE((tmp_path / "outbox.sqlite").stat().st_mode) == 0o600


def test_the_outbox_survives_a_restart_and_keeps_counting_up_even_if_the_clock_goes_back(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    first = EventOutbox(path, clock=lambda: NOW_MS)
    kept = first.add(GATE, "tamper", nonce="")
    first.add(GATE, "passage", nonce="ab" * 16)
    first.confirm(GATE, kept.seq)
    first.close()

    again = EventOutbox(path, clock=lambda: NOW_MS - 60_000)  # the clock was set back a minute
    assert [(e.kind, e.nonce) for e in again.pending()] == [("passage", "ab" * 16)]
    later = again.add(GATE, "tamper")
    assert later.seq == NOW_MS + 2  # never a number the gateway already has
    again.close()
