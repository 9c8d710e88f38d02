"""A token bucket per reader: one reader flooding the decision service cannot starve the others.

Each reader may ask `burst` times at once, then `rate` times a second on average. A genuine turnstile sees a
person every second or two at most, so the defaults leave ample room for a queue of people while cutting a
rogue client (or a reader stuck in a loop) down to size. Pure: the clock is injected (monotonic seconds), no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_RATE = 5.0  # requests per second, sustained, per reader
DEFAULT_BURST = 20  # requests a reader may send at once after a quiet spell
MAX_TRACKED = 10_000  # readers remembered at most; the full (idle) buckets are forgotten first


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class ReaderRateLimit:
    clock: Callable[[], float]  # monotonic seconds
    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("rate must be positive and burst at least 1")

    def allow(self, reader: str) -> bool:
        """Take one request from the reader's bucket; False when it is empty (the request is to be dropped)."""
        now = self.clock()
        bucket = self._buckets.get(reader)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED:
                self._forget_idle(now)
            bucket = self._buckets[reader] = _Bucket(float(self.burst), now)
        else:
            # max(): a clock that steps back must not drain the bucket.
            bucket.tokens = min(float(self.burst), bucket.tokens + max(0.0, now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets that have refilled: forgetting them changes nothing (a new bucket starts full)."""
        full = [r for r, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst]
        for reader in full:
            del self._buckets[reader]
        if len(self._buckets) >= MAX_TRACKED:  # all busy: forget the oldest rather than grow without bound
            oldest = min(self._buckets, key=lambda r: self._buckets[r].at)
            del self._buckets[oldest]


LOGIN_MAX_FAILURES = 5  # wrong passwords for one user name from one address ...
LOGIN_WINDOW_S = 15 * 60  # ... within this time lock that pair out ...
LOGIN_LOCKOUT_S = 5 * 60  # ... for this long (even the right password is refused meanwhile)
_LOGIN_MAX_TRACKED = 10_000


@dataclass
class _Failures:
    times: list[float]
    locked_until: float = 0.0


@dataclass
class LoginThrottle:
    """Password guessing slowed to LOGIN_MAX_FAILURES tries per LOGIN_LOCKOUT_S for each (user name, address).

    Keyed on the pair, so a guesser from one address cannot lock the real operator out from the desk's address.
    Pure: the caller passes the time (seconds) and does the logging.
    """

    max_failures: int = LOGIN_MAX_FAILURES
    window_s: float = LOGIN_WINDOW_S
    lockout_s: float = LOGIN_LOCKOUT_S
    _seen: dict[tuple[str, str], _Failures] = field(default_factory=dict)

    @staticmethod
    def key(username: str, address: str) -> tuple[str, str]:
        return (username.strip().casefold()[:64], address)

    def locked_for(self, key: tuple[str, str], now: float) -> float:
        """Seconds left in the pair's lockout; 0 when it may try."""
        entry = self._seen.get(key)
        return max(0.0, entry.locked_until - now) if entry else 0.0

    def failed(self, key: tuple[str, str], now: float) -> bool:
        """Count a wrong password; True when this failure starts a lockout (the caller audits it)."""
        if len(self._seen) >= _LOGIN_MAX_TRACKED and key not in self._seen:
            self._forget_stale(now)
        entry = self._seen.setdefault(key, _Failures([]))
        entry.times = [t for t in entry.times if now - t < self.window_s] + [now]
        if len(entry.times) >= self.max_failures and entry.locked_until <= now:
            entry.locked_until = now + self.lockout_s
            entry.times = []
            return True
        return False

    def succeeded(self, key: tuple[str, str]) -> None:
        self._seen.pop(key, None)

    def _forget_stale(self, now: float) -> None:
        stale = [
            k for k, e in self._seen.items() if e.locked_until <= now and all(now - t >= self.window_s for t in e.times)
        ]
        for k in stale:
            del self._seen[k]
        if len(self._seen) >= _LOGIN_MAX_TRACKED:
            del self._seen[next(iter(self._seen))]
