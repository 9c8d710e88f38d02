"""Offline operation end to end, on real parts: a private Mosquitto, `python -m gateway decide`, `python -m readers
run` on camera videos with a local store, and a simulated OSDP turnstile behind the bridge.

The gateway is stopped mid-stream; the reader of a verify_locally gate decides by itself and the bridge acts on
its offline-signed grants; the reader is killed with a full queue and restarted; the gateway comes back; every
offline decision is in the audit exactly once, as offline, with both times, and the audit still verifies.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from firmware_bridge.sim import SimulatedGate, start_simulated_gate
from gateway import audit, contract
from gateway.broker_setup import GATEWAY_USER, bridge_user
from gateway.db.engine import make_engine, session_factory
from gateway.db.models import AuditEntry, Position
from gateway.instance import write_private
from gateway.mqttlink import BrokerAddress
from readers.offline_store import OfflineStore
from readers.scenes import empty_frame, render_badge_frame, write_video
from tests.factories import badged_holder
from tests.mqtt_helpers import Listener

ROOT = Path(__file__).resolve().parent.parent
GATE, READER = "STA-G1", "STA-G1-IN"  # zones.yaml: STA-G1 is verify_locally
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


class Gateway:
    """`python -m gateway decide` as a process we can stop and start again."""

    def __init__(self, instance: Any, broker: Any, tmp_path: Path) -> None:
        self.password = tmp_path / "gateway.pw"
        write_private(self.password, broker.password(GATEWAY_USER).encode())
        self.instance, self.broker, self.tmp_path = instance, broker, tmp_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.tmp_path / f"gateway-{self.starts}.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "decide", "--instance", str(self.instance.folder),
                 "--broker-port", str(self.broker.port), "--password-file", str(self.password)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while "answering on" not in log.read_text(errors="replace"):
            assert self.proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "gateway decide did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        self.proc = None


@pytest.fixture
def world(instance, site, broker, tmp_path: Path) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    reader_pw = tmp_path / "reader.pw"
    write_private(reader_pw, broker.password(READER).encode())
    key = tmp_path / "reader" / "offline.key"
    made = subprocess.run(
        [sys.executable, "-m", "readers", "keygen", str(key)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    public = Path(made.stdout.strip())
    gateway = Gateway(instance, broker, tmp_path)
    gateway.start()
    pub = instance.keyring.decision_signing.public_key()
    sim: SimulatedGate = start_simulated_gate(
        site,
        GATE,
        {contract.key_id(pub): pub},
        BrokerAddress("127.0.0.1", broker.port, bridge_user(GATE), broker.password(bridge_user(GATE))),
        reader_keys={READER: contract.public_key_from_pem(public.read_bytes())},
    )
    yield {"gateway": gateway, "sim": sim, "reader_pw": reader_pw, "key": key, "store": tmp_path / "reader.sqlite"}
    sim.stop()
    if gateway.proc is not None:
        gateway.stop()


def reader_command(world: dict[str, Any], broker: Any, instance: Any, video: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "readers", "run", "--site", str(ROOT / "zones.yaml"), "--reader", READER,
        "--source", str(video), "--broker-port", str(broker.port), "--password-file", str(world["reader_pw"]),
        "--decision-key", str(instance.folder / "keys" / "decision.pub.pem"),
        "--store", str(world["store"]), "--offline-key", str(world["key"]), *extra,
    ]  # fmt: skip


def video_of(token: str | None, path: Path, seed: int, idle_frames: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    frames = [render_badge_frame(token, (1280, 720), rng=rng, perspective=0.1, noise_sigma=4.0)] * 5 if token else []
    frames += [empty_frame((1280, 720), rng)] * max(idle_frames, 0 if token else 5)
    write_video(frames, path, fps=10)
    return path


def scan(world: dict[str, Any], broker: Any, instance: Any, token: str | None, tmp_path: Path, seed: int,
         upload_wait: float = 3.0) -> str:  # fmt: skip
    video = video_of(token, tmp_path / f"camera-{seed}.avi", seed)
    command = reader_command(world, broker, instance, video, "--upload-wait", str(upload_wait))
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def decisions(instance: Any) -> list[AuditEntry]:
    sessions = session_factory(make_engine(instance.settings.database_url))
    with sessions() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.kind == "decision").order_by(AuditEntry.seq)))


def wait_for(predicate: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())


def test_gateway_away_reader_killed_nothing_lost_nothing_twice(world, instance, site, broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    regular = badged_holder(instance, site, ["STADIUM-PERIMETER"], now, name=("Keller", "Jana"))
    walker = badged_holder(instance, site, ["STADIUM-PERIMETER"], now, name=("Durand", "Paul"))
    stolen = badged_holder(instance, site, ["STADIUM-PERIMETER"], now, name=("Roux", "Ines"), revoked=True)
    elsewhere = badged_holder(instance, site, ["AIRPORT-LANDSIDE"], now, name=("Smit", "Anna"))
    turnstile = world["sim"].turnstile

    # Online: the gateway decides; the reader keeps the site messages it publishes (keys, revocations, ...).
    out = scan(world, broker, instance, regular.token, tmp_path, seed=1)
    assert "ALLOW  granted" in out and "[OFFLINE]" not in out
    assert turnstile.wait_pulses(1, timeout=5)
    with _opened(world["store"]) as store:
        assert set(store.site_messages()) == {"keys", "revocations", "threat_level", "config"}
        assert store.queued() == 0

    # The gateway goes away mid-stream.
    world["gateway"].stop()
    with Listener(broker, GATEWAY_USER, [contract.reader_status_topic(READER)]) as statuses:
        out = scan(world, broker, instance, walker.token, tmp_path, seed=2, upload_wait=0)
        assert "ALLOW  granted" in out and "[OFFLINE]" in out and "OFFLINE: the gateway does not answer" in out
        # The bridge opened on the reader's offline-signed grant, and the person walked through.
        assert turnstile.wait_pulses(2, timeout=5)
        assert turnstile.pass_person()
        seen = statuses.wait_for(lambda m: contract.ReaderStatus.from_json(bytes(m.payload)).mode == "offline")
        assert seen is not None and contract.ReaderStatus.from_json(bytes(seen.payload)).offline_queue >= 1
    out = scan(world, broker, instance, stolen.token, tmp_path, seed=3, upload_wait=0)
    assert "DENY   revoked" in out and "[OFFLINE]" in out
    assert turnstile.relay_pulses == 2

    # The reader is killed (no clean stop) right after deciding offline, its queue full.
    video = video_of(elsewhere.token, tmp_path / "camera-long.avi", seed=4, idle_frames=300)
    proc = subprocess.Popen(
        reader_command(world, broker, instance, video, "--fps", "10"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "[OFFLINE]" in line:
            assert "DENY   zone_not_permitted" in line
            break
    proc.kill()
    proc.wait(10)
    with _opened(world["store"]) as store:
        queued = {d.nonce: d for d in store.pending(100)}
    assert [d.badge for d in sorted(queued.values(), key=lambda d: d.decided_ms)] == [
        walker.id,
        stolen.id,
        elsewhere.id,
    ]
    assert not {d.nonce for d in queued.values()} & {r.ref for r in decisions(instance)}

    # The gateway comes back; the restarted reader uploads its queue, then goes on deciding online.
    world["gateway"].start()
    out = scan(world, broker, instance, regular.token, tmp_path, seed=5, upload_wait=20)
    with _opened(world["store"]) as store:
        assert store.queued() == 0
    rows = decisions(instance)
    offline = [r for r in rows if r.mode == "offline"]
    assert sorted(r.ref or "" for r in offline) == sorted(queued)  # each exactly once
    assert len({r.ref for r in rows}) == len(rows)
    for row in offline:
        sent = queued[row.ref or ""]
        assert (row.reader, row.gate, row.badge_id, row.allow, row.reason) == (
            READER,
            GATE,
            sent.badge,
            sent.allow,
            sent.reason,
        )
        assert audit.to_ms(row.at) == audit.to_ms(dt.datetime.fromtimestamp(sent.decided_ms / 1000, dt.UTC))
        assert row.recorded_at > row.at  # decided while the gateway was away, received after it came back
    # The offline grant that was used moved its holder, whichever of passage and upload reached the gateway first.
    sessions = session_factory(make_engine(instance.settings.database_url))

    def walked_in() -> bool:
        with sessions() as s:
            position = s.get(Position, walker.holder_id)
            return position is not None and position.zone == "STADIUM-PERIMETER"

    assert wait_for(walked_in)

    # A repeated upload (a lost acknowledgement) is acknowledged again and adds nothing.
    again = queued[offline[0].ref or ""]
    with Listener(broker, READER, [contract.offline_ack_topic(READER)]) as reader_side:
        reader_side.client.publish(contract.offline_upload_topic(READER), again.to_json(), qos=1)
        assert reader_side.wait_for(
            lambda m: contract.OfflineDecisionAck.from_json(bytes(m.payload)).nonce == again.nonce
        )
    assert sorted(r.ref or "" for r in decisions(instance) if r.mode == "offline") == sorted(queued)

    world["gateway"].stop()
    verified = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", "--instance", str(instance.folder)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr


class _opened:
    """The reader's store, opened for a look while no reader runs."""

    def __init__(self, path: Path) -> None:
        self.store = OfflineStore(path)

    def __enter__(self) -> OfflineStore:
        return self.store

    def __exit__(self, *_exc: object) -> None:
        self.store.close()
