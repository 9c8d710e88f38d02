"""Structured logs: the formatters, and one badge scan followed by its nonce through the three real processes
(`python -m readers`, `python -m gateway decide`, `python -m firmware_bridge run --simulate`), all with
`--log-format json`, over a private Mosquitto. The same run scrapes the decision process's and the bridge's
--metrics-port."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import badges, jsonlog
from gateway.broker_setup import GATEWAY_USER, BrokerFiles, bridge_user, free_port
from gateway.db.engine import make_engine, session_factory
from gateway.instance import write_private
from readers.scenes import render_badge_frame, write_video

ROOT = Path(__file__).resolve().parent.parent
GATE, READER = "STA-G1", "STA-G1-IN"


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "gateway.test", "levelname": "INFO", "levelno": logging.INFO})
    record.msg, record.args = "decided %s", ("allow",)
    record.__dict__.update(extra)
    return record


def test_json_formatter_writes_one_object_per_line_with_the_scan_fields() -> None:
    line = jsonlog.JsonFormatter("gateway").format(_record(**jsonlog.scan("STA-G1", "STA-G1-IN", "ab" * 16)))
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "decided allow"
    assert (out["service"], out["logger"], out["level"]) == ("gateway", "gateway.test", "INFO")
    assert (out["gate"], out["reader"], out["nonce"]) == ("STA-G1", "STA-G1-IN", "ab" * 16)
    assert out["at"].endswith("Z")


def test_json_formatter_leaves_out_empty_scan_fields_and_keeps_the_exception() -> None:
    try:
        raise ValueError("line\nbreak")
    except ValueError:
        record = _record(**jsonlog.scan(gate="STA-G1"))
        record.exc_info = sys.exc_info()
    line = jsonlog.JsonFormatter("bridge").format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["gate"] == "STA-G1" and "reader" not in out and "nonce" not in out
    assert "ValueError: line\nbreak" in out["exception"]


def test_text_format_appends_the_scan_fields() -> None:
    line = jsonlog.TextFormatter().format(_record(**jsonlog.scan("STA-G1", "", "cd" * 16)))
    assert line.endswith(f"gateway.test: decided allow [gate=STA-G1 nonce={'cd' * 16}]")
    assert "[" not in jsonlog.TextFormatter().format(_record())


def test_configure_replaces_the_handlers_and_refuses_unknown_formats() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        jsonlog.configure("json", logging.INFO, "reader", stream)
        logging.getLogger("readers.x").info("hello %s", "there", extra=jsonlog.scan(reader="R1"))
        assert json.loads(stream.getvalue()) | {"at": ""} == {
            "at": "",
            "level": "INFO",
            "service": "reader",
            "logger": "readers.x",
            "message": "hello there",
            "reader": "R1",
        }
        with pytest.raises(ValueError):
            jsonlog.configure("xml", logging.INFO, "reader")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


# --- one scan through the three real processes ---------------------------------------------------------


class Process:
    """A child process whose stderr (the JSON log) is collected line by line on a thread."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    pytest.fail(f"never logged {text!r}; exit {self.proc.poll()}:\n" + "\n".join(self.lines[-20:]))
                self._cond.wait(min(left, 0.5))

    def records(self, plain: str = "\0") -> list[dict[str, Any]]:
        """Every log line as a JSON object (each must be one), except the command's own lines starting `plain`."""
        with self._cond:
            lines = [line for line in self.lines if line.strip() and not line.startswith(plain)]
        return [json.loads(line) for line in lines]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._thread.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


@pytest.fixture
def running(instance, broker: BrokerFiles, tmp_path: Path) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    pw = {}
    for user in (GATEWAY_USER, READER, bridge_user(GATE)):
        pw[user] = tmp_path / f"{user}.pw"
        write_private(pw[user], broker.password(user).encode())
    key = str(instance.folder / "keys" / "decision.pub.pem")
    decide_port, bridge_port = free_port(), free_port()
    common = ["--broker-port", str(broker.port)]
    gateway = Process(
        ["-m", "gateway", "--log-format", "json", "decide", "--instance", str(instance.folder), *common,
         "--password-file", str(pw[GATEWAY_USER]), "--worker", "j1", "--metrics-port", str(decide_port)]
    )
    bridge = Process(
        ["-m", "firmware_bridge", "--log-format", "json", "run", "--site", str(ROOT / "zones.yaml"), "--gate", GATE,
         *common, "--password-file", str(pw[bridge_user(GATE)]), "--decision-key", key, "--simulate",
         "--metrics-port", str(bridge_port)]
    )
    try:
        gateway.wait_for("metrics on http://")
        bridge.wait_for("bridge running with simulated turnstiles")
        yield {"gateway": gateway, "bridge": bridge, "pw": pw, "key": key, "ports": (decide_port, bridge_port)}
    finally:
        bridge.stop()
        gateway.stop()


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_one_scan_is_followed_by_its_nonce_through_reader_gateway_and_bridge(  # type: ignore[no-untyped-def]
    running, instance, site, broker: BrokerFiles, tmp_path: Path
) -> None:
    sessions = session_factory(make_engine(instance.settings.database_url))
    now = dt.datetime.now(dt.UTC)
    with sessions() as s, s.begin():
        org = badges.get_or_create_organisation(s, "GN-75", "Gendarmerie, Paris", "gendarmerie", "FR")
        holder = badges.register_holder(s, site, org, "Roux", "Léa", "gendarme", "FR", now)
        badge = badges.issue_badge(
            s, site, instance.keyring, instance.settings.issuer, holder, ["STADIUM-PERIMETER"],
            now - dt.timedelta(minutes=5), now + dt.timedelta(days=1), now,
        )
    frame = render_badge_frame(badge.token, (1280, 720), rng=np.random.default_rng(7), perspective=0.1)
    video = tmp_path / "camera.avi"
    write_video([frame] * 4, video, fps=10)
    reader = Process(
        ["-m", "readers", "--log-format", "json", "-v", "run", "--site", str(ROOT / "zones.yaml"), "--reader", READER,
         "--source", str(video), "--broker-port", str(broker.port), "--password-file", str(running["pw"][READER]),
         "--decision-key", running["key"], "--metrics-port", str(free_port())]
    )
    try:
        assert reader.proc.wait(60) == 0, "\n".join(reader.lines)
    finally:
        reader.stop()

    logged = reader.records(plain=f"{READER}: source ended")  # its summary, printed by the command itself
    [asked] = [r for r in logged if r.get("nonce") and r["logger"] == "readers.metrics"]
    nonce = asked["nonce"]
    assert (asked["service"], asked["gate"], asked["reader"]) == ("reader", GATE, READER)
    assert "allow granted" in asked["message"]

    running["gateway"].wait_for(nonce)
    running["bridge"].wait_for(nonce)
    [decided] = [r for r in running["gateway"].records() if r.get("nonce") == nonce]
    assert (decided["service"], decided["gate"], decided["reader"]) == ("gateway", GATE, READER)
    assert decided["message"] == "decided allow granted"
    acted = next(r for r in running["bridge"].records() if r.get("nonce") == nonce)
    assert (acted["service"], acted["gate"], acted["message"]) == ("bridge", GATE, f"gate {GATE}: grant {nonce}")

    # The same scan, counted where Prometheus scrapes it.
    decide_port, bridge_port = running["ports"]
    decisions = _scrape(decide_port)
    assert decisions[("accessgw_decisions_total", frozenset({("result", "allow"), ("reason", "granted")}))] == 1
    commands = _scrape(bridge_port)
    assert commands[("accessgw_bridge_commands_total", frozenset({("action", "grant")}))] == 1
    assert commands[("accessgw_bridge_controller_link_up", frozenset({("gate", GATE)}))] == 1
