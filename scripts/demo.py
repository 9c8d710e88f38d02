"""The demo: a private broker, the gateway, one simulated gate, and a camera video showing four badges.

Run through `bash scripts/demo.sh` (which installs everything first). Everything it makes lives in ./demo-run
and is rebuilt on every run. Ctrl-C stops it; --once stops after the video has been read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway import badges  # noqa: E402
from gateway.broker_setup import GATEWAY_USER, bridge_user, free_port, start_mosquitto, write_broker_files  # noqa: E402
from gateway.cli import add_operator, sync_site  # noqa: E402
from gateway.db.engine import make_engine, session_factory, upgrade  # noqa: E402
from gateway.instance import create_instance, load_instance, write_private  # noqa: E402
from gateway.site import load_site  # noqa: E402

GATE, READER = "STA-G1", "STA-G1-IN"
PY = sys.executable


def _stream(name: str, proc: subprocess.Popen[str]) -> threading.Thread:
    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"[{name:7}] {line.rstrip()}", flush=True)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    return t


def _start(name: str, args: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [PY, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    _stream(name, proc)
    return proc


def _web_port() -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8080))
            return 8080
        except OSError:
            return free_port()


def _wait_http(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the web side did not come up on port {port}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--once", action="store_true", help="stop after the video instead of waiting for Ctrl-C"
    )
    opts = parser.parse_args()

    run = ROOT / "demo-run"
    subprocess.run(["rm", "-rf", str(run)], check=True)
    run.mkdir()
    os.chmod(run, 0o700)
    zones = ROOT / "zones.yaml"
    site = load_site(zones)

    print("== creating the gateway instance (keys, SQLite database, administrator)")
    folder = run / "instance"
    url = f"sqlite:///{folder / 'gateway.db'}"
    create_instance(folder, url, zones, site.code)
    upgrade(url)
    instance = load_instance(folder)
    sync_site(instance, site)
    admin_password = add_operator(instance, "admin", "admin")
    lead_password = add_operator(instance, "lead", "lead")

    print("== registering four guards and issuing their badges")
    now = dt.datetime.now(dt.UTC)
    day = dt.timedelta(days=1)
    sessions = session_factory(make_engine(url))
    people = [
        (
            "valid",
            "Moreau",
            "Claire",
            "gendarme",
            ["STADIUM-PERIMETER", "STADIUM-CONCOURSE"],
            now - day,
            now + 3 * day,
        ),
        (
            "wrong zone",
            "Schmidt",
            "Jonas",
            "police",
            ["AIRPORT-LANDSIDE", "AIRPORT-AIRSIDE"],
            now - day,
            now + 3 * day,
        ),
        ("revoked", "Rossi", "Marco", "private_guard", ["STADIUM-PERIMETER"], now - day, now + 3 * day),
        ("expired", "Silva", "Ana", "soldier", ["STADIUM-PERIMETER"], now - 10 * day, now - day),
    ]
    tokens: list[str] = []
    labels: dict[str, str] = {}
    with sessions() as s, s.begin():
        org = badges.get_or_create_organisation(s, "DEMO-SEC", "Demo contingent", "police", "FR")
        for label, family, given, role, zone_list, start, end in people:
            holder = badges.register_holder(s, site, org, family, given, role, "FR", now)
            badge = badges.issue_badge(
                s, site, instance.keyring, instance.settings.issuer, holder, zone_list, start, end, now
            )
            if label == "revoked":
                badges.revoke_badge(s, badge.id, "reported lost", now)
            tokens.append(badge.token)
            labels[badge.id] = label
            print(f"   badge {badge.id}  {given} {family:8} {label:10} zones {', '.join(zone_list)}")

    print("== starting a private Mosquitto with one account per process")
    port = free_port()
    files = write_broker_files(run / "mqtt", site, port)
    broker = start_mosquitto(files, log=run / "mosquitto.log")
    pw = {}
    for user in (GATEWAY_USER, READER, bridge_user(GATE)):
        pw[user] = run / f"{user}.pw"
        write_private(pw[user], files.password(user).encode())
    broker_args = ["--broker-host", "127.0.0.1", "--broker-port", str(port)]
    decision_key = str(folder / "keys" / "decision.pub.pem")

    print("== making the camera video: the four badges shown in turn at 1280x720")
    from readers.scenes import badge_video

    video = run / "gate-camera.avi"
    badge_video(tokens, video, np.random.default_rng(2024))

    procs: list[subprocess.Popen[str]] = []
    try:
        web_port = _web_port()
        procs.append(
            _start(
                "gateway",
                [
                    "-m",
                    "gateway",
                    "decide",
                    "--instance",
                    str(folder),
                    *broker_args,
                    "--password-file",
                    str(pw[GATEWAY_USER]),
                ],
            )
        )
        procs.append(
            _start("web", ["-m", "gateway", "web", "--instance", str(folder), "--port", str(web_port)])
        )
        procs.append(
            _start(
                "bridge",
                [
                    "-m",
                    "firmware_bridge",
                    "run",
                    "--site",
                    str(zones),
                    "--gate",
                    GATE,
                    *broker_args,
                    "--password-file",
                    str(pw[bridge_user(GATE)]),
                    "--decision-key",
                    decision_key,
                    "--simulate",
                    "--walk-in",
                ],
            )
        )
        _wait_http(web_port)
        time.sleep(3)  # the bridge brings up the OSDP secure channel
        print(f"== the reader {READER} watches the video; decisions follow")
        for badge_id, label in labels.items():
            print(f"   expect: {badge_id} ({label})")
        reader = _start(
            "reader",
            [
                "-m",
                "readers",
                "run",
                "--site",
                str(zones),
                "--reader",
                READER,
                "--source",
                str(video),
                "--fps",
                "10",
                *broker_args,
                "--password-file",
                str(pw[READER]),
                "--decision-key",
                decision_key,
            ],
        )
        reader.wait()
        time.sleep(2)  # let the last turnstile events arrive
        print()
        print("== web side for security leads")
        print(f"   open   http://127.0.0.1:{web_port}/")
        print(f"   log in as  lead / {lead_password}   (security lead)")
        print(f"          or  admin / {admin_password}   (administrator)")
        print(f"   keys   http://127.0.0.1:{web_port}/.well-known/jwks.json")
        if not opts.once:
            print("== running; press Ctrl-C to stop")
            stop = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            while not stop.wait(0.5):
                pass
        return 0 if reader.returncode == 0 else 1
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.terminate()


if __name__ == "__main__":
    sys.exit(main())
