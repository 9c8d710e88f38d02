"""Readers' clock skew: how far each reader's clock is from the gateway's, and when that is worth an alarm.

Readers stamp what they send with their own clock (`sent_ms` of a decision request, `at_ms` of a live status).
The gateway never decides with that clock, but a reader whose clock is off by minutes judges answer expiry,
badge validity while offline and its own records with it; so the gateway measures the difference on every
live message and raises an alarm when it passes a threshold. Pure: the caller passes both clocks' readings.

The figure includes the message's transit time (normally milliseconds), so only large skews mean anything.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

ALARM_THRESHOLD_MS = 30_000  # a reader more than 30 s off is reported
ALARM_REASON = "reader_clock_skew"  # audit kind "alarm": the reader's clock passed the threshold
CLEARED_REASON = "reader_clock_ok"  # audit kind "reader_clock": it came back within the threshold


def skew_ms(reader_ms: int, gateway_ms: int) -> int:
    """Reader's clock minus the gateway's, at the moment the gateway heard the message: positive = reader ahead."""
    return reader_ms - gateway_ms


@dataclass(frozen=True)
class SkewChange:
    """A reader's skew crossed the threshold (`alarm` True) or came back within it (`alarm` False)."""

    reader: str
    skew_ms: int
    alarm: bool


class ClockSkewTracker:
    """The latest skew of every reader heard, and the crossings of the alarm threshold (thread-safe)."""

    def __init__(self, threshold_ms: int = ALARM_THRESHOLD_MS) -> None:
        if threshold_ms <= 0:
            raise ValueError("the skew threshold must be positive")
        self.threshold_ms = threshold_ms
        self._lock = threading.Lock()
        self._skew: dict[str, int] = {}
        self._alarmed: set[str] = set()

    def observe(self, reader: str, reader_ms: int, gateway_ms: int) -> SkewChange | None:
        """Record one live message's skew; returns a change when the reader crossed the threshold either way."""
        skew = skew_ms(reader_ms, gateway_ms)
        over = abs(skew) > self.threshold_ms
        with self._lock:
            self._skew[reader] = skew
            if over == (reader in self._alarmed):
                return None
            if over:
                self._alarmed.add(reader)
            else:
                self._alarmed.discard(reader)
        if over:
            log.warning("reader %s clock is %+.1f s off the gateway's", reader, skew / 1000)
        else:
            log.info("reader %s clock is back within %.0f s (%+.1f s)", reader, self.threshold_ms / 1000, skew / 1000)
        return SkewChange(reader, skew, over)

    def already_alarmed(self, reader: str) -> None:
        """The audit says this reader's skew alarm still stands (raised before a restart): do not raise it again."""
        with self._lock:
            self._alarmed.add(reader)

    def forget_alarm(self, reader: str) -> None:
        """The crossing could not be recorded: let the next message report it again."""
        with self._lock:
            self._alarmed.discard(reader)

    def skew_of(self, reader: str) -> int | None:
        """The reader's latest skew in ms (None: not heard live yet)."""
        with self._lock:
            return self._skew.get(reader)

    def skews(self) -> dict[str, int]:
        with self._lock:
            return dict(self._skew)

    def alarmed(self) -> set[str]:
        """Readers whose clock is off by more than the threshold now."""
        with self._lock:
            return set(self._alarmed)
