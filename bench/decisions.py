"""Decision service benchmark: simulated readers against a real Mosquitto and real gateway processes.

    .venv/bin/python bench/decisions.py [--quick]

For each database (SQLite, PostgreSQL) it starts a private broker and `python -m gateway decide` worker
processes, then drives them from a separate load process with simulated readers (one MQTT account each):
- closed loop: each reader keeps a fixed number of requests in flight; reports decisions/s;
- fixed rates: requests sent on a schedule; reports answer latency p50/p99 and how many answers came;
- the floor: the same load against a bare paho request/echo responder through the same broker.
Results print as tables, then each database's figures against issue 4's speed targets ("targets:" lines); copy
them into docs/performance.md ("Decisions").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from bench.db_floor import Floor, measure_floor  # noqa: E402
from bench.mqtt_wire import WireClient, publish_packet, selector_for  # noqa: E402
from gateway import badges, contract  # noqa: E402
from gateway.broker_setup import GATEWAY_USER, free_port, start_mosquitto, write_broker_files  # noqa: E402
from gateway.cli import sync_site  # noqa: E402
from gateway.db.engine import make_engine, session_factory, upgrade  # noqa: E402
from gateway.instance import create_instance, load_instance, write_private  # noqa: E402
from gateway.mqttlink import BrokerAddress, connect_and_wait, make_client  # noqa: E402
from gateway.site import load_site  # noqa: E402

READERS = ["STA-G1-IN", "STA-G2-IN", "STA-G3-IN", "GDN-G1-IN", "GDN-G2-IN", "CDG-G1-IN", "STA-G1-OUT", "CDG-G1-OUT"]
PG_URL = os.environ.get("ACCESSGW_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass
class Result:
    sent: int
    answered: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# --- the load process ------------------------------------------------------------------------------------


def _load(
    port: int, creds: dict[str, str], tokens: list[str], mode: str, value: float, seconds: float, out: Any
) -> None:
    """Runs in its own process: readers send requests and time the answers."""
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    done = threading.Condition(lock)
    clients: dict[str, mqtt.Client] = {}

    def on_answer(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        nonce = bytes(msg.properties.CorrelationData).decode()  # type: ignore[union-attr]
        now = time.perf_counter()
        with lock:
            t = sent_at.pop(nonce, None)
            if t is not None:
                latencies.append((now - t) * 1000)
                done.notify_all()

    for reader in READERS:
        address = BrokerAddress("127.0.0.1", port, reader, creds[reader])
        client = make_client(address, f"bench-{reader}", [(contract.answer_topic(reader), 1)], on_message=on_answer)
        connect_and_wait(client, address)
        clients[reader] = client
    time.sleep(0.5)
    counter = [0]

    def send(reader: str) -> None:
        nonce = secrets.token_hex(16)
        token = tokens[counter[0] % len(tokens)]
        counter[0] += 1
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = contract.answer_topic(reader)
        props.CorrelationData = nonce.encode()
        props.MessageExpiryInterval = contract.REQUEST_EXPIRY_S
        body = contract.DecisionRequest(reader=reader, nonce=nonce, token=token, sent_ms=int(time.time() * 1000))
        with lock:
            sent_at[nonce] = time.perf_counter()
        clients[reader].publish(contract.request_topic(reader), body.to_json(), qos=1, properties=props)

    start = time.perf_counter()
    end = start + seconds
    sent = 0
    if mode == "closed":
        in_flight = int(value)
        for i in range(in_flight * len(READERS)):
            send(READERS[i % len(READERS)])
            sent += 1
        while time.perf_counter() < end:
            with lock:
                done.wait(0.05)
                free = in_flight * len(READERS) - len(sent_at)
            for i in range(free):
                send(READERS[(sent + i) % len(READERS)])
            sent += max(free, 0)
    else:
        period = 1.0 / value
        next_at = start
        while next_at < end:
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            send(READERS[sent % len(READERS)])
            sent += 1
            next_at += period
    elapsed = time.perf_counter() - start
    deadline = time.perf_counter() + 3
    while time.perf_counter() < deadline:
        with lock:
            if not sent_at:
                break
        time.sleep(0.05)
    for client in clients.values():
        client.disconnect()
        client.loop_stop()
    with lock:
        out.put((sent, len(latencies), elapsed, latencies))


def _load_wire(
    port: int, creds: dict[str, str], tokens: list[str], mode: str, value: float, seconds: float, out: Any
) -> None:
    """The same load as `_load`, from one thread on plain sockets (bench/mqtt_wire.py): a cheaper generator."""
    clients = {r: WireClient(port, f"bench-{r}", r, creds[r], contract.answer_topic(r)) for r in READERS}
    selector = selector_for(list(clients.values()))
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []
    counter = [0]

    def on_answer(correlation: bytes) -> None:
        t = sent_at.pop(correlation, None)
        if t is not None:
            latencies.append((time.perf_counter() - t) * 1000)

    def send(reader: str) -> None:
        nonce = secrets.token_hex(16)
        token = tokens[counter[0] % len(tokens)]
        counter[0] += 1
        body = contract.DecisionRequest(reader=reader, nonce=nonce, token=token, sent_ms=int(time.time() * 1000))
        client = clients[reader]
        packet = publish_packet(
            contract.request_topic(reader),
            client.packet_id(),
            body.to_json(),
            contract.answer_topic(reader),
            nonce.encode(),
            contract.REQUEST_EXPIRY_S,  # as readers send them: the broker drops what waited too long
        )
        sent_at[nonce.encode()] = time.perf_counter()
        client.send(packet)

    def pump(timeout: float) -> None:
        for key, _ in selector.select(timeout):
            key.data.pump(on_answer)

    start = time.perf_counter()
    end = start + seconds
    sent = 0
    if mode == "closed":
        target = int(value) * len(READERS)
        while time.perf_counter() < end:
            for _ in range(target - len(sent_at)):
                send(READERS[sent % len(READERS)])
                sent += 1
            pump(0.05)
    else:
        period = 1.0 / value
        next_at = start
        while next_at < end:
            pump(max(0.0, next_at - time.perf_counter()))
            while time.perf_counter() >= next_at and next_at < end:
                send(READERS[sent % len(READERS)])
                sent += 1
                next_at += period
    elapsed = time.perf_counter() - start
    deadline = time.perf_counter() + 3
    while sent_at and time.perf_counter() < deadline:
        pump(0.05)
    for client in clients.values():
        client.close()
    out.put((sent, len(latencies), elapsed, latencies))


GENERATOR = {"wire": _load_wire, "paho": _load}


def run_load(
    port: int,
    creds: dict[str, str],
    tokens: list[str],
    mode: str,
    value: float,
    seconds: float,
    generator: str = "wire",
) -> Result:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=GENERATOR[generator], args=(port, creds, tokens, mode, value, seconds, queue))
    proc.start()
    sent, answered, elapsed, latencies = queue.get(timeout=seconds + 60)
    proc.join(10)
    return Result(sent, answered, elapsed, latencies)


# --- the responders -----------------------------------------------------------------------------------------


def _echo(port: int, password: str, ready: Any) -> None:
    """The floor: answer every request at once with a fixed payload, through the same broker."""
    address = BrokerAddress("127.0.0.1", port, GATEWAY_USER, password)
    holder: list[mqtt.Client] = []

    def on_request(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.CorrelationData = msg.properties.CorrelationData  # type: ignore[union-attr]
        holder[0].publish(msg.properties.ResponseTopic, b'{"echo":true}', qos=1, properties=props)  # type: ignore[union-attr]

    client = make_client(address, "bench-echo", [(contract.REQUEST_SUBSCRIPTION, 1)], on_message=on_request)
    holder.append(client)
    connect_and_wait(client, address)
    ready.set()
    threading.Event().wait()


def start_echo(port: int, password: str) -> mp.Process:
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_echo, args=(port, password, ready), daemon=True)
    proc.start()
    ready.wait(20)
    return proc


def start_workers(
    folder: Path, port: int, password_file: Path, count: int, badge_cache: int | None = None
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for n in range(count):
        log = folder / f"worker{n}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "decide",
                    "--instance",
                    str(folder),
                    "--broker-port",
                    str(port),
                    "--password-file",
                    str(password_file),
                    "--worker",
                    f"bench{n}",
                    # Each simulated reader stands for hundreds of real gates: lift the per-reader limit
                    # (5/s by default), which would otherwise cut the load to 40 requests/s.
                    "--reader-rate",
                    "100000",
                    "--reader-burst",
                    "100000",
                    *([] if badge_cache is None else ["--badge-cache", str(badge_cache)]),
                ],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "ACCESSGW_LOG_LEVEL": "WARNING"},
            )
        deadline = time.monotonic() + 30
        while b"answering on" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {n} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        procs.append(proc)
    return procs


def stop(procs: list[Any]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(10) if isinstance(p, subprocess.Popen) else p.join(10)


# --- set-up ---------------------------------------------------------------------------------------------------


def prepare(work: Path, url: str, holders: int) -> tuple[Path, list[str]]:
    site = load_site(ROOT / "zones.yaml")
    folder = work / "instance"
    create_instance(folder, url, ROOT / "zones.yaml", site.code)
    upgrade(url)
    instance = load_instance(folder)
    sync_site(instance, site)
    now = dt.datetime.now(dt.UTC)
    sessions = session_factory(make_engine(url))
    tokens = []
    with sessions() as s, s.begin():
        org = badges.get_or_create_organisation(s, "BENCH", "Bench contingent", "police", "FR")
        for i in range(holders):
            holder = badges.register_holder(s, site, org, f"Holder{i}", "Bench", "police", "FR", now)
            badge = badges.issue_badge(
                s,
                site,
                instance.keyring,
                instance.settings.issuer,
                holder,
                ["STADIUM-PERIMETER", "STADIUM-CONCOURSE", "STADIUM-BOWL", "STATION-CHECKPOINT", "AIRPORT-LANDSIDE"],
                now - dt.timedelta(hours=1),
                now + dt.timedelta(days=2),
                now,
            )
            tokens.append(badge.token)
    return folder, tokens


def pg_schema_url() -> tuple[str, str]:
    from sqlalchemy import create_engine, text

    schema = f"bench_{secrets.token_hex(4)}"
    with create_engine(PG_URL).begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}", schema


def drop_schema(schema: str) -> None:
    from sqlalchemy import create_engine, text

    with create_engine(PG_URL).begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def row(label: str, r: Result) -> str:
    return f"| {label} | {r.sent} | {r.answered} | {r.rate:,.0f} | {r.pct(50):.2f} | {r.pct(99):.2f} |"


def against_targets(
    floor: dict[int, Result], closed: dict[int, Result], one_worker: dict[int, Result], db_floor: Floor | None
) -> list[str]:
    """Issue 4's speed targets, as this run measured them (one worker unless said)."""
    out = [f"targets: closed loop, one worker {closed[1].rate:,.0f}/s (at least 2,000/s)"]
    if 2000 in one_worker:
        r = one_worker[2000]
        out.append(f"targets: a fixed 2,000/s, {r.answered:,} of {r.sent:,} answered, p99 {r.pct(99):.2f} ms")
    if 500 in one_worker and 500 in floor:
        r, echo = one_worker[500], floor[500]
        out.append(f"targets: at 500/s p99 {r.pct(99):.2f} ms (under 10 ms)")
        out.append(
            f"targets: at 500/s p50 {r.pct(50):.2f} ms, {r.pct(50) / echo.pct(50):.1f}x the echo's "
            f"{echo.pct(50):.2f} ms (3x at most)"
        )
        if db_floor is not None:
            least = echo.pct(50) + db_floor.read_ms + db_floor.commit_ms
            out.append(
                f"floor: at 500/s the echo's {echo.pct(50):.2f} ms + a read {db_floor.read_ms:.2f} ms + a durable "
                f"one-row commit {db_floor.commit_ms:.2f} ms = {least:.2f} ms, {least / echo.pct(50):.1f}x the echo, "
                "before any decision work (bench/db_floor.py)"
            )
    gain = 100 * (closed[2].rate / closed[1].rate - 1) if closed[1].rate else float("nan")
    out.append(f"targets: two workers against one, closed loop {gain:+.0f}%")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test of the bench itself)")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument(
        "--generator",
        choices=sorted(GENERATOR),
        default="wire",
        help="load generator: 'wire' (one thread, plain sockets; default) or 'paho' (one paho client per reader)",
    )
    parser.add_argument("--rates", default="500,1000,2000", help="fixed request rates to run, per second")
    parser.add_argument(
        "--badge-cache",
        type=int,
        default=None,
        help="workers' --badge-cache (0: every badge signature checked at every scan; default: the product's)",
    )
    opts = parser.parse_args()
    rates = [int(r) for r in opts.rates.split(",")]
    seconds = 3.0 if opts.quick else 10.0
    cache = "product default" if opts.badge_cache is None else opts.badge_cache
    print(
        f"# decisions bench: {os.cpu_count()} cores, {seconds:.0f} s per run, {len(READERS)} simulated readers, "
        f"200 badges, badge cache {cache}"
    )
    header = "| run | sent | answered | answers/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|"
    for db in opts.databases.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            schema = ""
            url = f"sqlite:///{work / 'gateway.db'}"
            if db == "postgresql":
                url, schema = pg_schema_url()
            folder, tokens = prepare(work, url, holders=200)
            site = load_site(ROOT / "zones.yaml")
            files = write_broker_files(work / "mqtt", site, free_port())
            broker = start_mosquitto(files, log=work / "mosquitto.log")
            creds = json.loads(files.credentials.read_text())
            pw = work / "gateway.pw"
            write_private(pw, creds[GATEWAY_USER].encode())
            print(f"\n## audit on {db}\n\n{header}")
            try:
                echo = start_echo(files.port, creds[GATEWAY_USER])
                floor = {
                    rate: run_load(files.port, creds, tokens, "rate", rate, seconds, opts.generator) for rate in rates
                }
                print(
                    row(
                        "echo floor, closed loop 4 in flight/reader",
                        run_load(files.port, creds, tokens, "closed", 4, seconds, opts.generator),
                    )
                )
                for rate, r in floor.items():
                    print(row(f"echo floor, {rate}/s", r))
                stop([echo])
                closed: dict[int, Result] = {}
                at_rate: dict[int, Result] = {}
                for workers in (1, 2):
                    procs = start_workers(folder, files.port, pw, workers, opts.badge_cache)
                    try:
                        closed[workers] = run_load(files.port, creds, tokens, "closed", 4, seconds, opts.generator)
                        print(row(f"{workers} worker(s), closed loop 4 in flight/reader", closed[workers]))
                        for rate in rates:
                            r = run_load(files.port, creds, tokens, "rate", rate, seconds, opts.generator)
                            print(row(f"{workers} worker(s), {rate}/s", r))
                            if workers == 1:
                                at_rate[rate] = r
                    finally:
                        stop(procs)
                db_floor = measure_floor(url, 500, seconds / 2) if 500 in rates else None
                print("\n" + "\n".join(against_targets(floor, closed, at_rate, db_floor)))
            finally:
                broker.terminate()
                if schema:
                    drop_schema(schema)


if __name__ == "__main__":
    main()
