"""Firmware bridge: turns the gateway's signed decisions into OSDP commands for turnstile controllers.

Nothing is started at import: see firmware_bridge.cli (the process) and firmware_bridge.sim (simulated gates for
tests and demos). One module, one job:

- serial_line, channels: the RS-485 line (pyserial) and test lines (memory, multidrop bus, pty, cuttable);
- controller: the OSDP panel for one bus, secure channel only, fail-secure on link faults;
- wiring, door, display: which output and inputs mean what, door alarms, what the display says;
- gate: one gate's answer checks, commands and grant bookkeeping;
- outbox, bridge: events kept on disk until acknowledged, and the MQTT side;
- keys, commission: controller key files, and installing a key in a new controller;
- turnstile, sim: the simulated controller and whole simulated gates.
"""
