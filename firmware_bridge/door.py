"""Door monitoring as an access panel does it: raw controller inputs plus our own grants become alarm kinds.

The controller only reports contacts. Whether an open door is a forced door depends on whether we released
it, which only the panel knows, so the classification lives here. Pure: time is passed in (monotonic s).
"""

from __future__ import annotations

from firmware_bridge.wiring import INPUT_COUNT, INPUT_DOOR, INPUT_PASSAGE, INPUT_TAMPER

RELEASE_GRACE_S = 1.0  # bus latency and the time the arm takes to move after the relay drops


class DoorMonitor:
    """Turns one controller's input reports into "passage", "door_forced", "door_held_open" and "tamper"."""

    def __init__(self, held_open_s: float) -> None:
        if held_open_s <= 0:
            raise ValueError(f"held_open_s must be positive, got {held_open_s}")
        self._held_open_s = held_open_s
        self._inputs = (0,) * INPUT_COUNT
        self._release_until: float | None = None
        self._open_since: float | None = None
        self._open_was_granted = False
        self._held_reported = False

    def released(self, now: float, pulse_s: float) -> None:
        """We pulsed the relay: the door may open until the pulse ends (plus grace)."""
        self._release_until = now + pulse_s + RELEASE_GRACE_S

    def cancel_release(self) -> None:
        """The pulse never reached the controller."""
        self._release_until = None

    def reset(self) -> None:
        """The controller went offline: its inputs are unknown until it reports again."""
        self._inputs = (0,) * INPUT_COUNT
        self._release_until = None
        self._open_since = None
        self._held_reported = False

    def inputs(self, report: bytes, now: float) -> list[str]:
        """Classify the changes between the previous input report and this one."""
        new = tuple(1 if b else 0 for b in report[:INPUT_COUNT].ljust(INPUT_COUNT, b"\x00"))
        old, self._inputs = self._inputs, new
        kinds: list[str] = []
        if new[INPUT_DOOR] and not old[INPUT_DOOR]:
            granted = self._release_until is not None and now <= self._release_until
            self._open_since, self._open_was_granted, self._held_reported = now, granted, False
            if not granted:
                kinds.append("door_forced")
        elif old[INPUT_DOOR] and not new[INPUT_DOOR]:
            self._open_since = None
            if self._open_was_granted:
                self._release_until = None  # one grant, one opening: opening again after closing is forcing
        if new[INPUT_PASSAGE] and not old[INPUT_PASSAGE]:
            kinds.append("passage")
            self._release_until = None  # one grant lets one person through
        if new[INPUT_TAMPER] and not old[INPUT_TAMPER]:
            kinds.append("tamper")
        return kinds

    def tick(self, now: float) -> list[str]:
        """A door opened on a grant and left open too long raises one held-open alarm per opening."""
        if (
            self._open_since is not None
            and self._open_was_granted
            and not self._held_reported
            and now - self._open_since >= self._held_open_s
        ):
            self._held_reported = True
            return ["door_held_open"]
        return []
