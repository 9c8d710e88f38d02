"""Tokens already verified are reused only as far as verification itself goes: never for time, revocation or a
retired key."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from typing import Any

import pytest

from gateway import contract, tokens
from gateway.badge_cache import VerifiedBadges
from gateway.core import BadgeClaims, Reason, TokenProblem
from tests.factories import badged_holder, decision_service
from tests.test_tokens import ISSUER, KEYS, OTHER_KEY, issued

NOW = dt.datetime(2026, 7, 26, 19, 30, tzinfo=dt.UTC)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens verify_token really checked (a hit does not call it)."""
    checked: list[str] = []
    real = tokens.verify_token

    def counting(token: str, *args: Any) -> BadgeClaims | TokenProblem:
        checked.append(token)
        return real(token, *args)

    monkeypatch.setattr(tokens, "verify_token", counting)
    return checked


def test_a_verified_token_is_checked_once_and_gives_the_same_claims(counted: list[str]) -> None:
    cache = VerifiedBadges()
    token = issued()
    first = cache.verify(token, KEYS, ISSUER, {})
    again = cache.verify(token, KEYS, ISSUER, {})
    assert isinstance(first, BadgeClaims) and again == first
    assert counted == [token] and (cache.hits, cache.misses) == (1, 1)


def test_a_refused_token_is_never_kept(counted: list[str]) -> None:
    cache = VerifiedBadges()
    forged = issued()[:-4] + "AAAA"
    for _ in range(3):
        result = cache.verify(forged, KEYS, ISSUER, {})
        assert isinstance(result, TokenProblem) and result.reason is Reason.BAD_SIGNATURE
    assert len(counted) == 3


def test_new_accepted_keys_empty_the_cache() -> None:
    cache = VerifiedBadges()
    token = issued()
    assert isinstance(cache.verify(token, KEYS, ISSUER, {}), BadgeClaims)
    retired = {tokens.badge_key_id(OTHER_KEY.public_key()): OTHER_KEY.public_key()}  # the old key is gone
    result = cache.verify(token, retired, ISSUER, {})
    assert isinstance(result, TokenProblem) and result.reason is Reason.UNKNOWN_KID


def test_the_least_recently_used_token_leaves_first(counted: list[str]) -> None:
    cache = VerifiedBadges(entries=2)
    a, b, c = (issued(badge_id=f"B-{n}") for n in ("aaa", "bbb", "ccc"))
    for token in (a, b, a, c):  # c pushes out b, the least recently used
        cache.verify(token, KEYS, ISSUER, {})
    counted.clear()
    cache.verify(a, KEYS, ISSUER, {})
    cache.verify(c, KEYS, ISSUER, {})
    cache.verify(b, KEYS, ISSUER, {})
    assert counted == [b]


def test_size_zero_checks_every_time(counted: list[str]) -> None:
    cache = VerifiedBadges(entries=0)
    token = issued()
    cache.verify(token, KEYS, ISSUER, {})
    cache.verify(token, KEYS, ISSUER, {})
    assert counted == [token, token]


def request(token: str) -> contract.DecisionRequest:
    return contract.DecisionRequest(reader="STA-G1-IN", nonce=secrets.token_hex(16), token=token, sent_ms=0)


def test_a_cached_badge_still_expires_and_loses_a_retired_key(instance, site) -> None:  # type: ignore[no-untyped-def]
    clock = [NOW]
    service = decision_service(instance, site, lambda: clock[0])
    badge = badged_holder(
        instance, site, ["STADIUM-PERIMETER"], NOW, valid=(dt.timedelta(hours=-1), dt.timedelta(hours=1))
    )
    assert service.answer(request(badge.token)).allow
    assert service.badges.hits == 0 and service.answer(request(badge.token)).allow and service.badges.hits == 1

    clock[0] = NOW + dt.timedelta(hours=2)  # the badge expired: the core judges time at each decision
    answer = service.answer(request(badge.token))
    assert (answer.allow, answer.reason) == (False, "expired")

    clock[0] = NOW
    keyring = dataclasses.replace(instance.keyring, badge_public={})  # the badge's key is retired
    service.keyring = lambda: keyring
    answer = service.answer(request(badge.token))
    assert (answer.allow, answer.reason) == (False, "unknown_kid")
