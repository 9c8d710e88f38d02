"""A simulated turnstile controller: a real libosdp PeripheralDevice with a lock, sensors and alarms.

It obeys only what arrives over OSDP (relay pulses, LED, buzzer, text) and reports its sensors as OSDP input
status, so tests and the demo exercise the same bytes a real controller would see.

Threading: libosdp calls `_on_command` from its refresh thread while holding the device lock, so that path
never submits events; the scripted actions (`pass_person`, `force`, ...) submit them from the caller's thread
and never while holding `_cond`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import osdp

from firmware_bridge.wiring import (
    INPUT_COUNT,
    INPUT_DOOR,
    INPUT_PASSAGE,
    INPUT_TAMPER,
    LED_COLOURS,
    OUTPUT_PERMANENT_OFF,
    OUTPUT_TEMPORARY_ON,
    RELAY_OUTPUT,
    TEXT_MAX_CHARS,
    TIMER_UNIT_MS,
)

log = logging.getLogger(__name__)

SCBK_BYTES = 16
_ACK, _NAK = 0, -1  # command handler results: libosdp answers NAK for a negative value

StateListener = Callable[[str, str], None]  # (old state, new state)


class TurnstileState(StrEnum):
    LOCKED = "locked"
    RELEASED = "released"  # relay pulsed: the arm turns for one person
    ROTATING = "rotating"
    FORCED = "forced"  # alarm: moved while locked
    HELD_OPEN = "held_open"  # alarm: kept open after a release
    TAMPER = "tamper"  # alarm: cabinet opened


ALARM_STATES = frozenset({TurnstileState.FORCED, TurnstileState.HELD_OPEN, TurnstileState.TAMPER})


@dataclass(frozen=True)
class BuzzerPattern:
    tone: int  # OSDP tone code: 0 none, 1 off, 2 default tone
    on_ms: int
    off_ms: int
    repeats: int


def _capabilities() -> osdp.PDCapabilities:
    return osdp.PDCapabilities(
        [
            (osdp.Capability.OutputControl, 1, 1),
            (osdp.Capability.ContactStatusMonitoring, 1, INPUT_COUNT),
            (osdp.Capability.LEDControl, 1, 1),
            (osdp.Capability.AudibleControl, 1, 1),
            (osdp.Capability.TextOutput, 1, 1),
        ]
    )


class SimulatedTurnstile:
    """One turnstile controller at `address` on `channel`, accepting only a secure channel keyed by `scbk`.

    `install_mode=True` (with `scbk=None`) is a controller fresh from the factory: it accepts the OSDP default
    key (SCBK-D) so that a commissioning panel can give it its own key with KEYSET; once keyed it obeys only
    commands that came over the secure channel.
    """

    def __init__(
        self,
        channel: osdp.Channel,
        address: int,
        scbk: bytes | None,
        *,
        install_mode: bool = False,
        log_level: int = osdp.LogLevel.Error,
    ) -> None:
        if install_mode and scbk is not None:
            raise ValueError("a turnstile in install mode has no SCBK yet")
        if not install_mode and (not isinstance(scbk, bytes) or len(scbk) != SCBK_BYTES):
            raise ValueError(f"a turnstile needs a {SCBK_BYTES}-byte secure channel base key (SCBK)")
        self.address = address
        self._scbk = scbk
        self._secure_only = not install_mode
        self._cond = threading.Condition()  # RLock inside: properties may be read from wait predicates
        self._report_lock = threading.Lock()  # keeps each scripted action's reports in order
        self._state = TurnstileState.LOCKED
        self._inputs = [0] * INPUT_COUNT
        self._pulses_ms: list[int] = []
        self._pulse_times: list[float] = []  # time.monotonic() when each pulse command arrived
        self._led_permanent = "off"
        self._led = "off"
        self._led_history: list[str] = []
        self._buzzer: BuzzerPattern | None = None
        self._text = ""
        # A timer whose generation is no longer current was made obsolete by a newer command or action.
        self._lock_generation = 0
        self._led_generation = 0
        self._timers: set[threading.Timer] = set()
        self._listeners: list[StateListener] = []
        self._pending: list[tuple[str, str]] = []  # state changes not yet given to the listeners
        self._notify_lock = threading.RLock()  # listeners see the changes in order, whichever thread drains
        self._running = False
        flags = [osdp.LibFlag.InstallMode] if install_mode else [osdp.LibFlag.EnforceSecure]
        info = osdp.PDInfo(address, channel, scbk=scbk, name=f"turnstile-{address}", flags=flags)
        self._pd = osdp.PeripheralDevice(info, _capabilities(), log_level=log_level, command_handler=self._on_command)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._running:
                return
            self._running = True
        self._pd.start()

    def stop(self) -> None:
        with self._cond:
            if not self._running:
                return
            self._running = False
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()
        self._pd.stop()

    def is_secure(self) -> bool:
        return bool(self._pd.is_sc_active())

    @property
    def scbk(self) -> bytes | None:
        """The key the controller holds now (None while in install mode and not yet keyed)."""
        with self._cond:
            return self._scbk

    def add_listener(self, listener: StateListener) -> None:
        """Called with (old, new) on every state change, in order, from the thread that made it.

        It may be libosdp's thread: a listener must return quickly and must not call the turnstile's actions.
        """
        with self._cond:
            self._listeners.append(listener)

    # --- what the bridge made it do ------------------------------------------------------------------

    @property
    def state(self) -> TurnstileState:
        with self._cond:
            return self._state

    @property
    def relay_pulses(self) -> int:
        with self._cond:
            return len(self._pulses_ms)

    @property
    def pulse_durations_ms(self) -> list[int]:
        with self._cond:
            return list(self._pulses_ms)

    @property
    def pulse_times(self) -> list[float]:
        """When each relay pulse command arrived (time.monotonic()), for latency measurements."""
        with self._cond:
            return list(self._pulse_times)

    @property
    def led(self) -> str:
        """The colour showing now (a temporary colour while its timer runs, else the permanent one)."""
        with self._cond:
            return self._led

    @property
    def led_history(self) -> list[str]:
        """Every colour the bridge asked for, in order."""
        with self._cond:
            return list(self._led_history)

    @property
    def buzzer(self) -> BuzzerPattern | None:
        with self._cond:
            return self._buzzer

    @property
    def text(self) -> str:
        with self._cond:
            return self._text

    @property
    def inputs(self) -> tuple[int, ...]:
        with self._cond:
            return tuple(self._inputs)

    # --- waiting -----------------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[SimulatedTurnstile], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def wait_state(self, state: TurnstileState, timeout: float) -> bool:
        return self.wait_until(lambda t: t.state == state, timeout)

    def wait_pulses(self, count: int, timeout: float) -> bool:
        return self.wait_until(lambda t: t.relay_pulses >= count, timeout)

    # --- people and vandals (tests, demo) -------------------------------------------------------------

    def pass_person(self) -> bool:
        """One person walks through. Only while released; reports the arm turning, then the passage."""
        with self._report_lock:
            with self._cond:
                if self._state != TurnstileState.RELEASED:
                    return False
                self._lock_generation += 1  # the relock timer must not interrupt the rotation
                self._set_state(TurnstileState.ROTATING)
                self._inputs[INPUT_DOOR] = 1
                turning = bytes(self._inputs)
                self._inputs[INPUT_DOOR], self._inputs[INPUT_PASSAGE] = 0, 1
                passed = bytes(self._inputs)
                self._inputs[INPUT_PASSAGE] = 0
                home = bytes(self._inputs)
                self._set_state(TurnstileState.LOCKED)
            self._notify_listeners()
            for report in (turning, passed, home):
                self._report(report)
        return True

    def force(self) -> None:
        """Someone pushes the arm without a release."""
        self._alarm(TurnstileState.FORCED, INPUT_DOOR)

    def hold_open(self) -> bool:
        """After a release, someone keeps the door open. Only possible while released."""
        return self._alarm(TurnstileState.HELD_OPEN, INPUT_DOOR, only_from=TurnstileState.RELEASED)

    def tamper(self) -> None:
        """Someone opens the controller's cabinet."""
        self._alarm(TurnstileState.TAMPER, INPUT_TAMPER)

    def reset(self) -> None:
        """A guard closes the door and the cabinet and clears the alarm."""
        with self._report_lock:
            with self._cond:
                self._lock_generation += 1
                self._inputs = [0] * INPUT_COUNT
                report = bytes(self._inputs)
                self._set_state(TurnstileState.LOCKED)
            self._notify_listeners()
            self._report(report)

    def _alarm(self, state: TurnstileState, contact: int, only_from: TurnstileState | None = None) -> bool:
        with self._report_lock:
            with self._cond:
                if only_from is not None and self._state != only_from:
                    return False
                self._lock_generation += 1
                self._inputs[contact] = 1
                report = bytes(self._inputs)
                self._set_state(state)
            self._notify_listeners()
            self._report(report)
        return True

    def _report(self, report: bytes) -> None:
        if not self._running:
            log.warning("turnstile %d: stopped; input report %s not sent", self.address, report.hex())
            return
        event = {"event": osdp.Event.Status, "type": osdp.StatusReportType.Input, "report": report}
        if not self._pd.submit_event(event):
            log.warning("turnstile %d: could not queue input report %s", self.address, report.hex())

    # --- OSDP commands (libosdp's refresh thread) ------------------------------------------------------

    def _on_command(self, command: dict[str, Any]) -> tuple[int, None]:
        # libosdp prints and NAKs on an exception; we log instead and NAK explicitly.
        try:
            if command.get("command") == osdp.Command.Keyset:
                return self._on_keyset(command), None
            with self._cond:
                secure_only = self._secure_only
            if secure_only and not self._pd.is_sc_active():
                log.warning("turnstile %d: refused a command outside the secure channel", self.address)
                return _NAK, None
            handler = {
                osdp.Command.Output: self._on_output,
                osdp.Command.LED: self._on_led,
                osdp.Command.Buzzer: self._on_buzzer,
                osdp.Command.Text: self._on_text,
            }.get(command.get("command"))
            if handler is None:
                log.info("turnstile %d: unsupported command %r", self.address, command)
                return _NAK, None
            result = handler(command)
        except Exception:
            log.exception("turnstile %d: failed on command %r", self.address, command)
            return _NAK, None
        self._notify_listeners()
        return result, None

    def _on_keyset(self, cmd: dict[str, Any]) -> int:
        # libosdp only passes a KEYSET up that came over an active secure channel; it uses the new key from
        # the next handshake on. A real controller writes it to its own storage here.
        key = bytes(cmd.get("data", b""))
        if cmd.get("type") != 1 or len(key) != SCBK_BYTES:
            return _NAK
        with self._cond:
            self._scbk = key
            self._secure_only = True
            self._cond.notify_all()
        log.info("turnstile %d: new secure channel key stored", self.address)
        return _ACK

    def _on_output(self, cmd: dict[str, Any]) -> int:
        if cmd["output_no"] != RELAY_OUTPUT:
            return _NAK
        code, timer = cmd["control_code"], cmd["timer_count"]
        with self._cond:
            if code == OUTPUT_TEMPORARY_ON and timer > 0:
                duration_ms = timer * TIMER_UNIT_MS
                self._pulses_ms.append(duration_ms)
                self._pulse_times.append(time.monotonic())
                self._lock_generation += 1
                if self._state in (TurnstileState.LOCKED, TurnstileState.RELEASED):
                    self._set_state(TurnstileState.RELEASED)
                    self._later(duration_ms, self._relock, self._lock_generation)
                self._cond.notify_all()  # a pulse in an alarm state changes no state but is still news
                log.debug("turnstile %d: relay pulse %d ms", self.address, duration_ms)
                return _ACK
            if code == OUTPUT_PERMANENT_OFF:
                self._lock_generation += 1
                if self._state == TurnstileState.RELEASED:
                    self._set_state(TurnstileState.LOCKED)
                return _ACK
        return _NAK

    def _on_led(self, cmd: dict[str, Any]) -> int:
        colour = LED_COLOURS.get(cmd["on_color"], "unknown")
        with self._cond:
            self._led_history.append(colour)
            if cmd.get("temporary"):
                self._led = colour
                self._led_generation += 1
                self._later(cmd.get("timer_count", 0) * TIMER_UNIT_MS, self._led_back, self._led_generation)
            else:
                self._led_generation += 1
                self._led_permanent = self._led = colour
            self._cond.notify_all()
        return _ACK

    def _on_buzzer(self, cmd: dict[str, Any]) -> int:
        pattern = BuzzerPattern(
            tone=cmd["control_code"],
            on_ms=cmd["on_count"] * TIMER_UNIT_MS,
            off_ms=cmd["off_count"] * TIMER_UNIT_MS,
            repeats=cmd["rep_count"],
        )
        with self._cond:
            self._buzzer = pattern
            self._cond.notify_all()
        return _ACK

    def _on_text(self, cmd: dict[str, Any]) -> int:
        text = str(cmd["data"])
        if len(text) > TEXT_MAX_CHARS:
            return _NAK
        with self._cond:
            self._text = text
            self._cond.notify_all()
        return _ACK

    # --- timers --------------------------------------------------------------------------------------

    def _later(self, delay_ms: int, action: Callable[[int], None], generation: int) -> None:
        """Run `action(generation)` after the delay; called with `_cond` held."""
        if not self._running:
            return
        timer = threading.Timer(delay_ms / 1000, self._fire, args=(action, generation))
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _fire(self, action: Callable[[int], None], generation: int) -> None:
        with self._cond:
            self._timers = {t for t in self._timers if t.is_alive() and t is not threading.current_thread()}
            if not self._running:
                return
            action(generation)
        self._notify_listeners()

    def _relock(self, generation: int) -> None:
        if generation == self._lock_generation and self._state == TurnstileState.RELEASED:
            self._set_state(TurnstileState.LOCKED)

    def _led_back(self, generation: int) -> None:
        if generation == self._led_generation:
            self._led = self._led_permanent
            self._cond.notify_all()

    # --- state ---------------------------------------------------------------------------------------

    def _set_state(self, new: TurnstileState) -> None:
        """Change state with `_cond` held; listeners run later, outside the lock, via _notify_listeners."""
        old, self._state = self._state, new
        if old != new:
            self._pending.append((old.value, new.value))
            self._cond.notify_all()

    def _notify_listeners(self) -> None:
        with self._notify_lock:
            with self._cond:
                pending, self._pending = self._pending, []
                listeners = list(self._listeners)
            for old, new in pending:
                log.debug("turnstile %d: %s -> %s", self.address, old, new)
                for listener in listeners:
                    try:
                        listener(old, new)
                    except Exception:
                        log.exception("turnstile %d: state listener failed", self.address)
