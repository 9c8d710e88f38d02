"""Firmware bridge: turns the gateway's signed decisions into OSDP commands for turnstile controllers.

Nothing is started at import: see firmware_bridge.cli (the process) and firmware_bridge.sim (a whole simulated
gate for tests and demos).
"""
