"""How a turnstile controller is wired, shared by the bridge (CP side) and the simulated controller (PD side).

Both ends must agree on which OSDP output is the lock relay and which input is which sensor; keeping the
numbers in one place is what makes the simulation a test of the real mapping.
"""

from __future__ import annotations

import osdp

RELAY_OUTPUT = 0  # the lock release relay

INPUT_PASSAGE = 0  # passage sensor: 1 while a person crosses the sensor after the arm turned
INPUT_DOOR = 1  # door / arm position contact: 1 while away from its locked position
INPUT_TAMPER = 2  # enclosure tamper switch: 1 while the cabinet is open
INPUT_COUNT = 3

# OSDP output control codes (osdp_OUT), the ones a turnstile needs.
OUTPUT_PERMANENT_OFF = 1  # relock now, cancelling a running pulse
OUTPUT_TEMPORARY_ON = 5  # on for timer_count x 100 ms, then back to the permanent state: a pulse
TIMER_UNIT_MS = 100
# The Python binding narrows timer_count to one byte, so 25.5 s is the longest pulse it can carry.
MAX_TIMER_COUNT = 255

TEXT_MAX_CHARS = 32  # libosdp's OSDP_CMD_TEXT_MAX_LEN

LED_COLOURS: dict[int, str] = {
    osdp.CommandLEDColor.Black: "off",
    osdp.CommandLEDColor.Red: "red",
    osdp.CommandLEDColor.Green: "green",
    osdp.CommandLEDColor.Amber: "amber",
    osdp.CommandLEDColor.Blue: "blue",
    osdp.CommandLEDColor.Magenta: "magenta",
    osdp.CommandLEDColor.Cyan: "cyan",
    osdp.CommandLEDColor.White: "white",
}


def pulse_timer_count(pulse_ms: int) -> int:
    """OSDP timer units for a relay pulse: rounded up, at least one unit, at most what the binding carries."""
    if pulse_ms <= 0:
        raise ValueError(f"a relay pulse must last at least 1 ms, got {pulse_ms}")
    return min(-(-pulse_ms // TIMER_UNIT_MS), MAX_TIMER_COUNT)
