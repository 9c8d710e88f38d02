"""The OSDP control panel side: one bus, one or more turnstile controllers, secure channel only.

Every controller must have its own secure channel base key (SCBK), libosdp's enforce-secure flag is on (no
plaintext fallback, no default key), and every command is refused unless that controller's secure channel is
up, so nothing ever crosses the bus in plaintext.

Fail-secure rules kept here:
- a controller that goes offline (or loses its secure channel) has its queued commands dropped, so a relay
  pulse queued before the outage is never delivered when it comes back;
- a relay pulse the controller has not confirmed within OUTPUT_DEADLINE_S is aborted (the link to that
  controller is restarted), so a pulse is never delivered late after a line fault;
- libosdp 3.2.9 waits 300 s before retrying an offline controller; the link restarts the attempt itself
  (disable_pd/enable_pd) so a controller that comes back is online again within a few seconds.

libosdp calls our event handler from its refresh thread while holding the panel lock; calling back into the
panel from there would deadlock, so events are queued and handled on the link's own dispatcher thread, which
is also where listeners run and where the watchdog acts.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import osdp

from firmware_bridge.door import DoorMonitor
from firmware_bridge.keys import key_problem
from firmware_bridge.wiring import (
    OUTPUT_TEMPORARY_ON,
    RELAY_OUTPUT,
    TEXT_MAX_CHARS,
    TIMER_UNIT_MS,
    pulse_timer_count,
)

log = logging.getLogger(__name__)

SCBK_BYTES = 16
_TICK_S = 0.1  # how often timers (held open, deadlines, restarts) are checked
DENY_SHOW_S = 3  # how long the red LED and the denial text stay up
OUTPUT_DEADLINE_S = 2.0  # a relay pulse not confirmed by then is aborted, never delivered late
RESTART_FIRST_S = 1.0  # first wait before restarting an offline controller; doubles while it keeps failing
RESTART_MAX_S = 4.0
_SOM = b"\x53"  # OSDP start of message; the panel's frame carries the controller's address right after it

# A controller event: (address, kind) with kind from contract.GATE_EVENT_KINDS.
ControllerListener = Callable[[int, str], None]


class ControllerError(RuntimeError):
    """A command could not be given to a controller."""


class NotSecureError(ControllerError):
    """The controller's secure channel is not active, so no command may be sent to it."""


def display_text(text: str) -> str:
    """What a controller display can take: printable ASCII, at most 32 characters."""
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in text)
    return cleaned[:TEXT_MAX_CHARS]


def check_scbk(address: int, scbk: object) -> bytes:
    """The controller's key, or ValueError when it is missing, malformed, the default key or a toy key."""
    if not isinstance(scbk, bytes) or len(scbk) != SCBK_BYTES:
        raise ValueError(
            f"controller {address}: a {SCBK_BYTES}-byte secure channel key (SCBK) is required; "
            "this bridge never talks to a controller in plaintext"
        )
    problem = key_problem(scbk)
    if problem is not None:
        raise ValueError(f"controller {address}: unusable SCBK: {problem}")
    return scbk


class _GuardedChannel(osdp.Channel):  # type: ignore[misc]  # libosdp ships no type hints
    """The bus as the panel sees it, with a switch to silence the frames for one address.

    libosdp keeps retrying a frame it got no answer for (for about 8 s) and will not act on a restart request
    until those retries end; blocking the address is how a stale relay command is kept off the wire meanwhile.
    """

    def __init__(self, inner: osdp.Channel) -> None:
        super().__init__()
        self._inner = inner
        self._blocked: frozenset[int] = frozenset()
        self._lock = threading.Lock()

    def block(self, address: int) -> None:
        with self._lock:
            self._blocked = self._blocked | {address}

    def unblock(self, address: int) -> None:
        with self._lock:
            self._blocked = self._blocked - {address}

    def is_blocked(self, address: int) -> bool:
        return address in self._blocked

    def read(self, max_bytes: int) -> bytes:
        data: bytes = self._inner.read(max_bytes)
        return data

    def write(self, buf: bytes) -> int:
        data = bytes(buf)
        blocked = self._blocked
        if blocked:
            som = data.find(_SOM)
            if 0 <= som < len(data) - 1 and (data[som + 1] & 0x7F) in blocked:
                return len(data)  # as if sent: the controller never hears it
        written: int = self._inner.write(data)
        return written

    def flush(self) -> None:
        self._inner.flush()


class _Restart:
    """The watchdog's view of one controller: when to restart its connection attempt, and how it goes."""

    def __init__(self) -> None:
        self.due: float | None = None  # when to restart; None while nothing is to be done
        self.wait_s = RESTART_FIRST_S
        self.disabling = False  # disable_pd asked; enable_pd once libosdp has done it


class ControllerLink:
    """An OSDP control panel for the controllers on one bus, given as address -> SCBK."""

    def __init__(
        self,
        channel: osdp.Channel,
        controllers: Mapping[int, bytes],
        *,
        held_open_s: float | Mapping[int, float] = 8.0,
        log_level: int = osdp.LogLevel.Warning,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not controllers:
            raise ValueError("a controller link needs at least one controller")
        for address, scbk in controllers.items():
            if not isinstance(address, int) or not 0 <= address <= 126:
                raise ValueError(f"controller address {address!r} is not an OSDP address (0..126)")
            check_scbk(address, scbk)
        self._addresses = list(controllers)
        self._monotonic = monotonic
        held = held_open_s if isinstance(held_open_s, Mapping) else {a: held_open_s for a in self._addresses}
        self._monitors = {a: DoorMonitor(float(held[a])) for a in self._addresses}
        self._monitor_lock = threading.Lock()
        self._online: set[int] = set()
        self._restarts = {a: _Restart() for a in self._addresses}
        self._outputs: dict[int, deque[float]] = {a: deque() for a in self._addresses}  # unconfirmed pulses
        self._outputs_lock = threading.Lock()
        self._listeners: list[ControllerListener] = []
        self._events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self._sc_changed = threading.Condition()
        self._stopping = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._channel = _GuardedChannel(channel)
        infos = [
            osdp.PDInfo(
                address,
                self._channel,
                scbk=scbk,
                name=f"controller-{address}",
                flags=[osdp.LibFlag.EnforceSecure, osdp.LibFlag.EnableNotification],
            )
            for address, scbk in controllers.items()
        ]
        self._cp = osdp.ControlPanel(infos, log_level=log_level, event_handler=self._on_osdp_event)

    @property
    def addresses(self) -> tuple[int, ...]:
        return tuple(self._addresses)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._dispatcher is not None:
            return
        self._stopping.clear()
        self._dispatcher = threading.Thread(target=self._dispatch, name="osdp-link", daemon=True)
        self._dispatcher.start()
        self._cp.start()

    def stop(self) -> None:
        if self._dispatcher is None:
            return
        self._cp.stop()
        self._stopping.set()
        self._dispatcher.join(5)
        self._dispatcher = None

    def add_listener(self, listener: ControllerListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: ControllerListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # --- state -------------------------------------------------------------------------------------

    def _check(self, address: int) -> None:
        if address not in self._monitors:
            raise ValueError(f"no controller at address {address} on this link")

    def is_secure(self, address: int) -> bool:
        self._check(address)
        if self._dispatcher is None or self._channel.is_blocked(address):
            return False  # a link being restarted after a fault takes no command, whatever libosdp still thinks
        return bool(self._cp.is_sc_active(address))

    def is_online(self, address: int) -> bool:
        self._check(address)
        return self._dispatcher is not None and bool(self._cp.is_online(address))

    def wait_secure(self, address: int, timeout: float) -> bool:
        """Wait until the secure channel to `address` is active; False when `timeout` s pass first."""
        deadline = self._monotonic() + timeout
        with self._sc_changed:
            while not self.is_secure(address):
                left = deadline - self._monotonic()
                if left <= 0:
                    return False
                # Notifications wake us early; the short slice covers a change we were not told about.
                self._sc_changed.wait(min(left, _TICK_S))
        return True

    # --- commands ----------------------------------------------------------------------------------

    def grant(self, address: int, pulse_ms: int, text: str) -> None:
        """Pulse the lock relay for `pulse_ms`, show green, beep once, show `text`.

        Raises ControllerError when the relay command could not be queued; the courtesy commands after it
        (LED, beep, text) only log when they fail, since the door is already on its way.
        """
        timer_count = pulse_timer_count(pulse_ms)
        if timer_count * TIMER_UNIT_MS < pulse_ms:
            log.warning(
                "controller %d: relay pulse of %d ms cut to %d ms",
                address,
                pulse_ms,
                timer_count * TIMER_UNIT_MS,
            )
        self._require_secure(address)
        # Open the door window before the relay moves, so the opening it allows is never seen as forced.
        with self._monitor_lock:
            self._monitors[address].released(self._monotonic(), timer_count * TIMER_UNIT_MS / 1000)
        with self._outputs_lock:
            try:
                # The relay first: it is what the person waits for; the rest is courtesy.
                self._submit(
                    address,
                    {
                        "command": osdp.Command.Output,
                        "output_no": RELAY_OUTPUT,
                        "control_code": OUTPUT_TEMPORARY_ON,
                        "timer_count": timer_count,
                    },
                )
            except ControllerError:
                with self._monitor_lock:
                    self._monitors[address].cancel_release()
                raise
            self._outputs[address].append(self._monotonic() + OUTPUT_DEADLINE_S)
        self._courtesy(address, _led(osdp.CommandLEDColor.Green, timer_count))
        self._courtesy(address, _beep(on_count=1, repeats=1))
        self._courtesy(address, _text(text, seconds=max(1, timer_count * TIMER_UNIT_MS // 1000)))

    def deny(self, address: int, text: str) -> None:
        """Show red, beep long, show `text`; the relay stays as it is."""
        self._require_secure(address)
        self._submit(address, _led(osdp.CommandLEDColor.Red, DENY_SHOW_S * 1000 // TIMER_UNIT_MS))
        self._courtesy(address, _beep(on_count=10, repeats=1))
        self._courtesy(address, _text(text, seconds=DENY_SHOW_S))

    def _require_secure(self, address: int) -> None:
        if not self.is_secure(address):
            raise NotSecureError(f"controller {address}: secure channel is not active; command refused")

    def _submit(self, address: int, command: dict[str, Any]) -> None:
        # EnforceSecure on the panel keeps libosdp itself from falling back to plaintext if the channel
        # drops between our check and the send.
        if not self._cp.submit_command(address, command):
            raise ControllerError(f"controller {address}: libosdp refused command {command['command']}")

    def _courtesy(self, address: int, command: dict[str, Any]) -> None:
        try:
            self._submit(address, command)
        except ControllerError as exc:
            log.warning("%s", exc)

    # --- events ------------------------------------------------------------------------------------

    def _on_osdp_event(self, pd: int, event: dict[str, Any]) -> int:
        self._events.put((self._addresses[pd], event))
        return 0

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            try:
                address, event = self._events.get(timeout=_TICK_S)
            except queue.Empty:
                address, event = -1, {}
            try:
                if event:
                    self._handle(address, event)
                self._tick()
            except Exception:
                log.exception("controller link: failed to handle %r from controller %d", event, address)

    def _handle(self, address: int, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == osdp.Event.Notification:
            self._handle_notification(address, event)
        elif kind == osdp.Event.Status and event.get("type") == osdp.StatusReportType.Input:
            with self._monitor_lock:
                kinds = self._monitors[address].inputs(bytes(event.get("report", b"")), self._monotonic())
            for k in kinds:
                self._emit(address, k)
        else:
            log.debug("controller %d: ignored event %r", address, event)

    def _handle_notification(self, address: int, event: dict[str, Any]) -> None:
        ntype, arg0, arg1 = event.get("type"), event.get("arg0"), event.get("arg1")
        if ntype == osdp.EventNotification.Command:
            if arg0 == osdp.Command.Output:
                with self._outputs_lock:
                    if self._outputs[address]:
                        self._outputs[address].popleft()
            if not arg1:
                log.warning("controller %d: command %s failed (NAK or no answer)", address, arg0)
            return
        if ntype == osdp.EventNotification.SecureChannelStatus:
            log.info("controller %d: secure channel %s", address, "active" if arg0 else "down")
            if not arg0:
                self._drop_pending(address)
        elif ntype == osdp.EventNotification.PeripheralDeviceStatus:
            restart = self._restarts[address]
            if arg0:
                restart.due, restart.wait_s = None, RESTART_FIRST_S
                if address not in self._online:
                    self._online.add(address)
                    log.info("controller %d: online", address)
                    self._emit(address, "controller_online")
            else:
                self._drop_pending(address)
                if not restart.disabling:
                    # libosdp parked it for 300 s; we try again much sooner (and less often while it fails).
                    restart.due = self._monotonic() + restart.wait_s
                    restart.wait_s = min(restart.wait_s * 2, RESTART_MAX_S)
                if address in self._online:
                    self._online.discard(address)
                    with self._monitor_lock:
                        self._monitors[address].reset()
                    log.warning("controller %d: offline", address)
                    self._emit(address, "controller_offline")
        with self._sc_changed:
            self._sc_changed.notify_all()

    def _drop_pending(self, address: int) -> None:
        """Nothing queued for a controller whose link broke may reach it once the link is back."""
        with self._outputs_lock:
            self._outputs[address].clear()
            self._cp.flush_commands(address)
        with self._monitor_lock:
            self._monitors[address].cancel_release()

    def _tick(self) -> None:
        now = self._monotonic()
        with self._monitor_lock:
            due = [(a, k) for a, m in self._monitors.items() for k in m.tick(now)]
        for address, kind in due:
            self._emit(address, kind)
        for address in self._addresses:
            self._check_output_deadline(address, now)
            self._watchdog(address, now)
            # The panel also queues every event for get_event(), which we never call: keep it empty.
            while self._cp.get_event(address, timeout=-1) is not None:
                pass

    def _check_output_deadline(self, address: int, now: float) -> None:
        with self._outputs_lock:
            late = bool(self._outputs[address]) and self._outputs[address][0] <= now
        if not late:
            return
        log.error(
            "controller %d: relay pulse not confirmed within %.1f s; aborting it and restarting the link",
            address,
            OUTPUT_DEADLINE_S,
        )
        # libosdp may still be retrying the frame: keep it off the wire until the restart has discarded it.
        self._channel.block(address)
        self._drop_pending(address)
        self._restarts[address].due = now

    def _watchdog(self, address: int, now: float) -> None:
        restart = self._restarts[address]
        if restart.disabling:
            if not self._cp.is_pd_enabled(address):
                # Disabled: libosdp has dropped whatever frame it was retrying; the line may carry frames again.
                self._drop_pending(address)
                self._channel.unblock(address)
                self._cp.enable_pd(address)
                restart.disabling = False
                log.info("controller %d: trying to connect again", address)
            return
        if restart.due is not None and now >= restart.due:
            restart.due = None
            if self._cp.disable_pd(address):
                restart.disabling = True
            else:
                log.debug("controller %d: disable request not taken; retrying", address)
                restart.due = now + RESTART_FIRST_S

    def _emit(self, address: int, kind: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(address, kind)
            except Exception:
                log.exception("controller %d: listener failed on %s", address, kind)


def _led(colour: int, timer_count: int) -> dict[str, Any]:
    return {
        "command": osdp.Command.LED,
        "reader": 0,
        "led_number": 0,
        "control_code": 2,  # temporary state: back to the idle colour when the timer ends
        "on_count": 10,
        "off_count": 0,
        "on_color": colour,
        "off_color": osdp.CommandLEDColor.Black,
        "timer_count": timer_count,
        "temporary": True,
    }


def _beep(on_count: int, repeats: int) -> dict[str, Any]:
    return {
        "command": osdp.Command.Buzzer,
        "reader": 0,
        "control_code": 2,  # default tone
        "on_count": on_count,
        "off_count": 0,
        "rep_count": repeats,
    }


def _text(text: str, seconds: int) -> dict[str, Any]:
    return {
        "command": osdp.Command.Text,
        "reader": 0,
        "control_code": 3,  # temporary text, no wrap
        "temp_time": min(seconds, 255),
        "offset_row": 1,
        "offset_col": 1,
        "data": display_text(text),
    }
