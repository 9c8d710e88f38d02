"""The reader agent on real camera frames and the real decoder, with its gateway port faked: one decision per
badge presentation, QR codes that are not badges ignored with a logged reason, the counters the status reports."""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pytest

from gateway import contract
from readers.agent import ReaderAgent, looks_like_badge
from readers.decoding import Decoder, to_gray
from readers.scenes import empty_frame, render_badge_frame

READER, GATE = "STA-G1-IN", "STA-G1"
SIZE = (1280, 720)


@dataclass
class FakeGateway:
    """The agent's gateway port: answers every request (or stays silent) and records what the agent did."""

    answering: bool = True
    asked: list[str] = field(default_factory=list)
    forwarded: list[contract.DecisionAnswer] = field(default_factory=list)

    def ask(self, token: str, timeout_s: float) -> contract.DecisionAnswer | None:
        self.asked.append(token)
        if not self.answering:
            return None
        return contract.DecisionAnswer(
            reader=READER,
            gate=GATE,
            nonce=f"{len(self.asked):032x}",
            allow=True,
            reason="granted",
            badge=f"badge-{len(self.asked)}",
            decided_ms=1_785_094_200_000,
            expires_ms=1_785_094_205_000,
            kid="test-kid",
        )

    def forward_to_bridge(self, answer: contract.DecisionAnswer) -> None:
        self.forwarded.append(answer)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def frame_of(text: str | None, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return empty_frame(SIZE, rng) if text is None else render_badge_frame(text, SIZE, rng=rng)


def make_agent(gateway: FakeGateway, clock: Clock) -> ReaderAgent:
    return ReaderAgent(READER, Decoder(), gateway, to_gray, clock_s=clock, hold_s=2.0)


def show(agent: ReaderAgent, clock: Clock, texts: list[str | None], seed: int = 0, period_s: float = 0.1) -> int:
    """Show one frame per entry (a badge's text, or None for no badge), `period_s` apart; returns decisions."""
    decided = 0
    for number, text in enumerate(texts):
        decided += len(agent.process(frame_of(text, seed + number)))
        clock.now += period_s
    return decided


def test_a_badge_held_in_view_is_decided_once(badge_tokens: list[str]) -> None:
    gateway, clock = FakeGateway(), Clock()
    agent = make_agent(gateway, clock)
    assert show(agent, clock, [None, *[badge_tokens[0]] * 8, None]) == 1
    assert gateway.asked == [badge_tokens[0]]
    assert [answer.badge for answer in gateway.forwarded] == ["badge-1"]
    assert (agent.frames, agent.decodes, agent.decisions, agent.offline_queue) == (10, 8, 1, 0)


def test_a_badge_missed_for_a_frame_or_two_is_still_the_same_presentation(badge_tokens: list[str]) -> None:
    gateway, clock = FakeGateway(), Clock()
    agent = make_agent(gateway, clock)
    token = badge_tokens[0]
    # The guard's hand moves the card out of the frame for 0.3 s: shorter than the hold window.
    assert show(agent, clock, [token, token, None, None, None, token, token]) == 1
    assert gateway.asked == [token]


def test_a_badge_shown_again_after_the_hold_window_is_a_new_presentation(badge_tokens: list[str]) -> None:
    gateway, clock = FakeGateway(), Clock()
    agent = make_agent(gateway, clock)
    token = badge_tokens[0]
    show(agent, clock, [token, token])
    clock.now += 2.5  # gone longer than hold_s: the holder came back, or handed the badge to the next gate
    show(agent, clock, [token, token], seed=10)
    assert gateway.asked == [token, token]
    assert agent.decisions == 2


def test_badges_shown_one_after_the_other_are_each_decided(badge_tokens: list[str]) -> None:
    gateway, clock = FakeGateway(), Clock()
    agent = make_agent(gateway, clock)
    sequence = [badge_tokens[0]] * 3 + [badge_tokens[1]] * 3 + [badge_tokens[2]] * 3
    assert show(agent, clock, sequence) == 3
    assert gateway.asked == badge_tokens[:3]


def test_a_qr_code_that_is_not_a_badge_is_ignored_with_a_logged_reason(
    badge_tokens: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    gateway, clock = FakeGateway(), Clock()
    agent = make_agent(gateway, clock)
    menu = "https://example.org/stadium/menu?table=12"
    with caplog.at_level(logging.INFO, logger="readers.agent"):
        assert show(agent, clock, [menu] * 4) == 0
    assert gateway.asked == []
    assert agent.decodes == 4  # read every time, asked never
    ignored = [record.getMessage() for record in caplog.records if "not a badge" in record.getMessage()]
    assert len(ignored) == 1  # once per code, not once per frame
    assert "https://example.org" in ignored[0]
    # A badge that follows is decided as usual.
    assert show(agent, clock, [badge_tokens[0]]) == 1


def test_no_answer_from_the_gateway_denies_without_moving_the_turnstile(badge_tokens: list[str]) -> None:
    gateway, clock = FakeGateway(answering=False), Clock()
    agent = make_agent(gateway, clock)
    outcomes = agent.process(frame_of(badge_tokens[0], 0))
    assert [(o.allow, o.reason) for o in outcomes] == [(False, "gateway_unreachable")]
    assert gateway.forwarded == []
    assert agent.decisions == 1


def _jwt(header: dict[str, str], body: str = "e30", signature: str = "c2ln") -> str:
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{encoded}.{body}.{signature}"


@pytest.mark.parametrize(
    ("text", "badge"),
    [
        (_jwt({"alg": "EdDSA", "typ": "badge", "kid": "ab12"}), True),
        (_jwt({"alg": "EdDSA", "typ": "JWT"}), False),  # a JWT, but some other system's
        (_jwt({"alg": "EdDSA"}), False),
        (_jwt({"typ": "badge"}, body=""), False),  # an empty part
        ("WIFI:T:WPA;S:stadium-staff;P:secret;;", False),
        ("not.a.jwt", False),
        (_jwt({"typ": "badge"}, body="x" * 1100), False),  # longer than any badge token may be
    ],
    ids=["badge", "other-jwt", "no-typ", "empty-part", "wifi", "three-words", "too-long"],
)
def test_looks_like_badge(text: str, badge: bool) -> None:
    assert looks_like_badge(text) is badge


def test_the_real_badge_tokens_look_like_badges(badge_tokens: list[str]) -> None:
    assert all(looks_like_badge(token) for token in badge_tokens)
