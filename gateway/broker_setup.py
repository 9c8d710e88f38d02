"""Mosquitto configuration for a site: one MQTT account per process, and an ACL that confines each to its topics.

`write_broker_files` writes mosquitto.conf, the password file, the ACL and the clients' credentials (owner-only)
into one folder; `start_mosquitto` runs a private broker on it. Tests and the demo use both; a real site
gives the generated files to its own broker. Nothing here runs at import time.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from gateway import contract
from gateway.site import Site

GATEWAY_USER = "gateway"


def bridge_user(gate: str) -> str:
    return f"bridge.{gate}"


def bus_bridge_user(bus: str) -> str:
    """The account of a bridge that drives every gate whose controller is on one RS-485 bus."""
    return f"bridge-bus.{bus}"


def buses(site: Site) -> dict[str, list[str]]:
    """Bus name -> codes of the gates whose controllers are on it, in site order."""
    out: dict[str, list[str]] = {}
    for gate in site.gates.values():
        if gate.controller is not None:
            out.setdefault(gate.controller.bus, []).append(gate.code)
    return out


def acl_text(site: Site) -> str:
    """Each reader may only ask for itself and command its own gate; each bridge only hears its own gate."""
    p = contract.PREFIX
    lines = [
        f"user {GATEWAY_USER}",
        f"topic read {p}/readers/+/request",
        f"topic write {p}/readers/+/answer",
        f"topic read {contract.READER_STATUS_SUBSCRIPTION}",
        f"topic read {contract.BRIDGE_STATUS_SUBSCRIPTION}",
        f"topic read {p}/gates/+/event",
        f"topic write {p}/gates/+/ack",
        f"topic readwrite {p}/site/#",
        f"topic read {p}/readers/+/offline",  # offline decisions uploaded by readers
        f"topic write {p}/readers/+/offline-ack",
        f"topic read {p}/readers/+/guard/request",
        f"topic write {p}/readers/+/guard/answer",
        "",
    ]
    for reader in site.readers.values():
        lines += [
            f"user {reader.code}",
            f"topic write {contract.request_topic(reader.code)}",
            f"topic read {contract.answer_topic(reader.code)}",
            f"topic write {contract.gate_command_topic(reader.gate)}",
            f"topic write {contract.reader_status_topic(reader.code)}",  # retained status and last will
            f"topic write {contract.offline_upload_topic(reader.code)}",  # its own offline decisions only
            f"topic read {contract.offline_ack_topic(reader.code)}",
            f"topic write {contract.guard_request_topic(reader.code)}",  # its gate page
            f"topic read {contract.guard_answer_topic(reader.code)}",
            f"topic read {p}/site/#",
            "",
        ]
    for gate in site.gates.values():
        lines += [
            f"user {bridge_user(gate.code)}",
            f"topic read {contract.gate_command_topic(gate.code)}",
            f"topic write {contract.gate_event_topic(gate.code)}",
            f"topic read {contract.gate_ack_topic(gate.code)}",
            f"topic write {contract.bridge_status_topic(bridge_user(gate.code))}",  # retained status and last will
            f"topic read {p}/site/#",
            "",
        ]
    for bus, gates in buses(site).items():
        lines.append(f"user {bus_bridge_user(bus)}")
        for code in gates:
            lines += [
                f"topic read {contract.gate_command_topic(code)}",
                f"topic write {contract.gate_event_topic(code)}",
                f"topic read {contract.gate_ack_topic(code)}",
            ]
        lines += [f"topic write {contract.bridge_status_topic(bus_bridge_user(bus))}", f"topic read {p}/site/#", ""]
    return "\n".join(lines)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class BrokerFiles:
    folder: Path
    port: int

    @property
    def config(self) -> Path:
        return self.folder / "mosquitto.conf"

    @property
    def credentials(self) -> Path:
        return self.folder / "credentials.json"

    def password(self, user: str) -> str:
        creds: dict[str, str] = json.loads(self.credentials.read_text())
        return creds[user]


def write_broker_files(folder: Path, site: Site, port: int, host: str = "127.0.0.1") -> BrokerFiles:
    """Generate accounts for the gateway, every reader and every gate's bridge."""
    if shutil.which("mosquitto_passwd") is None:
        raise RuntimeError("mosquitto_passwd not found: install Debian's mosquitto package")
    folder.mkdir(parents=True, exist_ok=True)
    users = [GATEWAY_USER, *site.readers, *(bridge_user(g) for g in site.gates), *map(bus_bridge_user, buses(site))]
    creds = {u: secrets.token_urlsafe(18) for u in users}
    _write_private(folder / "credentials.json", json.dumps(creds, indent=1))
    passwd = folder / "passwd"
    _write_private(passwd, "")
    for user, password in creds.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True, capture_output=True)
    _write_private(folder / "acl", acl_text(site))
    conf = [
        f"listener {port} {host}",
        "allow_anonymous false",
        f"password_file {passwd}",
        f"acl_file {folder / 'acl'}",
        # Without it a QoS 1 round trip measured 88 ms here instead of under 1 ms (Nagle + delayed ACK).
        "set_tcp_nodelay true",
        "persistence false",
        "max_packet_size 65536",
        # QoS 1 messages a client may have unacknowledged (the Receive Maximum the broker announces; 20 by
        # default). The decision service answers in batches of up to 128, so 20 held answers back a turn.
        "max_inflight_messages 1000",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_dest stderr",
    ]
    if os.geteuid() == 0:
        conf.append("user root")  # otherwise mosquitto drops to 'mosquitto' and cannot read owner-only files
    else:
        conf.append(f"user {getpass.getuser()}")
    _write_private(folder / "mosquitto.conf", "\n".join(conf) + "\n")
    return BrokerFiles(folder=folder, port=port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mosquitto(files: BrokerFiles, log: Path | None = None, timeout_s: float = 10.0) -> subprocess.Popen[bytes]:
    """Start a private broker and wait until it accepts connections."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the broker writes to it for its lifetime
    proc = subprocess.Popen(["mosquitto", "-c", str(files.config)], stdout=out, stderr=out)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with code {proc.returncode} (config {files.config})")
        try:
            with socket.create_connection(("127.0.0.1", files.port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"mosquitto did not listen on port {files.port} within {timeout_s} s")
