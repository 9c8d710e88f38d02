"""Commissioning: give a new controller its own secure channel key, inside a short, logged time box.

A controller fresh from the factory (or reset to install mode) only knows the OSDP default key SCBK-D, which
is published in the standard. This is the one place where the bridge lets libosdp use it: the panel is set up
with the controller's new key and without enforce-secure, so libosdp tries the new key, falls back to SCBK-D,
and sends KEYSET with the new key inside that secure channel; the controller then restarts its secure channel
with the new key, which proves the change. The panel never sends any other command.

The attempt ends at the first of: the new key proven, the controller refusing (no secure channel at all, or
neither key accepted), or the end of the time box. Then the panel stops, so the default key is used nowhere
else and at no other time. Every attempt is logged and appended to a journal file.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import osdp

from firmware_bridge.controller import check_scbk

log = logging.getLogger(__name__)

MIN_WINDOW_S = 5
MAX_WINDOW_S = 600
DEFAULT_WINDOW_S = 60
_TICK_S = 0.05


class CommissioningError(RuntimeError):
    """The controller did not take its new key."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str
    seconds: float


def key_fingerprint(key: bytes) -> str:
    """A short name for a key that reveals nothing about it: for logs and the journal."""
    return hashlib.sha256(b"acs-scbk-fingerprint\n" + key).hexdigest()[:12]


class _Watch:
    """What the commissioning panel has told us, from libosdp's thread."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.keyset_acked = False
        self.secure_with_default = False
        self.secure_with_new_key = False
        self.online_without_sc = False
        self.offline_count = 0

    def on_event(self, _pd: int, event: dict[str, Any]) -> int:
        if event.get("event") != osdp.Event.Notification:
            return 0
        ntype, arg0, arg1 = event.get("type"), event.get("arg0"), event.get("arg1")
        with self.changed:
            if ntype == osdp.EventNotification.Command and arg0 == osdp.Command.Keyset and arg1:
                self.keyset_acked = True
            elif ntype == osdp.EventNotification.SecureChannelStatus and arg0:
                if arg1:  # arg1: the secure channel runs on SCBK-D
                    self.secure_with_default = True
                else:
                    self.secure_with_new_key = True
            elif ntype == osdp.EventNotification.PeripheralDeviceStatus and not arg0:
                self.offline_count += 1
            self.changed.notify_all()
        return 0


def commission(
    channel: osdp.Channel,
    address: int,
    new_key: bytes,
    window_s: float = DEFAULT_WINDOW_S,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    log_level: int = osdp.LogLevel.Warning,
) -> Outcome:
    """Put `new_key` into the controller at `address` on `channel`, within `window_s` seconds.

    Returns an Outcome; ok is True only when the controller ran a secure channel on the new key.
    """
    check_scbk(address, new_key)
    if not 0 < window_s <= MAX_WINDOW_S:
        raise ValueError(f"the commissioning window must be at most {MAX_WINDOW_S} s, not {window_s}")
    watch = _Watch()
    info = osdp.PDInfo(
        address,
        channel,
        scbk=new_key,
        name=f"commissioning-{address}",
        # No EnforceSecure: it is what lets libosdp fall back to SCBK-D; only within this function.
        flags=[osdp.LibFlag.EnableNotification],
    )
    panel = osdp.ControlPanel([info], log_level=log_level, event_handler=watch.on_event)
    started = monotonic()
    deadline = started + window_s
    log.warning("commissioning controller %d: the OSDP default key may be used for at most %.0f s", address, window_s)
    panel.start()
    try:
        outcome = _wait(panel, watch, address, deadline, monotonic)
    finally:
        panel.stop()
        log.warning("commissioning controller %d: window closed; the default key is no longer used", address)
    return Outcome(outcome[0], outcome[1], monotonic() - started)


def _wait(
    panel: osdp.ControlPanel, watch: _Watch, address: int, deadline: float, monotonic: Callable[[], float]
) -> tuple[bool, str]:
    # libosdp calls watch.on_event holding the panel's lock: never call the panel while holding watch.changed.
    seen_offline = 0
    restarting = False
    while True:
        with watch.changed:
            new_key, with_default = watch.secure_with_new_key, watch.secure_with_default
            keyset_acked, offline_count = watch.keyset_acked, watch.offline_count
        secure, online = panel.is_sc_active(address), panel.is_online(address)
        if new_key and secure:
            how = "after KEYSET over the default key" if keyset_acked else "(it already had this key)"
            return True, f"secure channel up on the new key {how}"
        if online and not secure:
            # Online in plaintext: the controller offers no secure channel, or took neither key.
            return False, (
                "the controller answers only in plaintext: it offers no secure channel, or accepts neither "
                "the new key nor the default key (is it in install mode?). Refused; nothing was sent to it"
            )
        if restarting:
            if not panel.is_pd_enabled(address):
                panel.enable_pd(address)
                restarting = False
            seen_offline = offline_count  # the disable itself reports the controller offline
        elif offline_count > seen_offline:
            seen_offline = offline_count
            if with_default:
                return False, "the controller accepted the default key but refused its new key (KEYSET)"
            # Not there yet (still powering up?): libosdp would wait 300 s; ask again now.
            restarting = bool(panel.disable_pd(address))
        left = deadline - monotonic()
        if left <= 0:
            return False, "no secure channel on the new key before the window closed"
        with watch.changed:
            watch.changed.wait(min(left, _TICK_S))


def append_journal(path: Path, record: dict[str, Any]) -> None:
    """One JSON line per commissioning attempt, in a file only its owner can read."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def journal_record(gate: str, address: int, port: str, key: bytes, outcome: Outcome, window_s: float) -> dict[str, Any]:
    return {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "by": getpass.getuser(),
        "host": socket.gethostname(),
        "gate": gate,
        "address": address,
        "port": port,
        "key": key_fingerprint(key),
        "window_s": window_s,
        "seconds": round(outcome.seconds, 1),
        "ok": outcome.ok,
        "detail": outcome.detail,
    }
