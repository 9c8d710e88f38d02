"""Soak: decisions at a steady rate for minutes over the real broker with the audit on; memory and latency drift.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 1000] [--database sqlite|postgresql|URL]

One `python -m gateway decide` process (audit on, as in production) on a private Mosquitto; the simulated readers
of bench/decisions.py send requests at `--rate` per second for `--minutes`, in consecutive windows (a minute each,
or a third of the run when it is shorter). After each window it prints the window's answers, latency p50/p99 and
the decision process's resident memory (RSS, from /proc); at the end, the first window against the last. A leak
shows as RSS growing window after window; a slowdown (audit growing, indexes, garbage) as p99 creeping up.
Each window starts a fresh load process (about a second between windows, while the gateway keeps running).
Copy the printed table into docs/performance.md ("Soak").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from bench.decisions import (  # noqa: E402  (the load generator and set-up of bench/decisions.py, as they are)
    Result,
    drop_schema,
    pg_schema_url,
    prepare,
    run_load,
    start_workers,
    stop,
)
from gateway.broker_setup import GATEWAY_USER, free_port, start_mosquitto, write_broker_files  # noqa: E402
from gateway.db.engine import make_engine, session_factory  # noqa: E402
from gateway.db.models import AuditEntry  # noqa: E402
from gateway.instance import write_private  # noqa: E402
from gateway.site import load_site  # noqa: E402


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class Window:
    index: int
    result: Result
    rss_mib: float
    audit_entries: int

    def row(self) -> str:
        r = self.result
        return (
            f"| {self.index} | {r.sent:,} | {r.answered:,} | {r.rate:,.0f} | {r.pct(50):.2f} | {r.pct(99):.2f} "
            f"| {self.rss_mib:.1f} | {self.audit_entries:,} |"
        )


def audit_count(url: str) -> int:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            return int(s.scalar(select(func.count()).select_from(AuditEntry)) or 0)
    finally:
        engine.dispose()


def database_url(choice: str, work: Path) -> tuple[str, str]:
    """(URL, PostgreSQL schema to drop afterwards or "")."""
    if choice == "sqlite":
        return f"sqlite:///{work / 'gateway.db'}", ""
    if choice == "postgresql":
        return pg_schema_url()
    return choice, ""


def soak(minutes: float, rate: float, database: str, holders: int, workers: int = 1) -> list[Window]:
    total_s = minutes * 60
    window_s = min(60.0, total_s / 3)
    count = max(1, round(total_s / window_s))
    windows: list[Window] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        url, schema = database_url(database, work)
        try:
            folder, tokens = prepare(work, url, holders=holders)
            files = write_broker_files(work / "mqtt", load_site(ROOT / "zones.yaml"), free_port())
            broker = start_mosquitto(files, log=work / "mosquitto.log")
            creds = json.loads(files.credentials.read_text())
            pw = work / "gateway.pw"
            write_private(pw, creds[GATEWAY_USER].encode())
            try:
                procs = start_workers(folder, files.port, pw, workers)
                try:
                    pids = ", ".join(str(p.pid) for p in procs)
                    print(f"decision process(es) {pids}, RSS at start {sum(rss_mib(p.pid) for p in procs):.1f} MiB")
                    print(f"\n{count} windows of {window_s:.0f} s at {rate:,.0f} requests/s, audit on {database}\n")
                    print("| window | sent | answered | answers/s | p50 ms | p99 ms | RSS MiB | audit entries |")
                    print("|---|---|---|---|---|---|---|---|")
                    for i in range(1, count + 1):
                        result = run_load(files.port, creds, tokens, "rate", rate, window_s)
                        for proc in procs:
                            if proc.poll() is not None:
                                raise RuntimeError(f"a decision process exited with {proc.returncode}")
                        window = Window(i, result, sum(rss_mib(p.pid) for p in procs), audit_count(url))
                        windows.append(window)
                        print(window.row(), flush=True)
                finally:
                    stop(procs)
            finally:
                broker.terminate()
        finally:
            if schema:
                drop_schema(schema)
    return windows


def summary(windows: list[Window]) -> str:
    first, last = windows[0], windows[-1]
    sent = sum(w.result.sent for w in windows)
    answered = sum(w.result.answered for w in windows)
    return "\n".join(
        [
            f"\nsoak summary: {answered:,} of {sent:,} requests answered ({answered / max(sent, 1):.3%})",
            f"RSS of the decision process: {first.rss_mib:.1f} MiB after window 1, {last.rss_mib:.1f} MiB after "
            f"window {last.index} ({last.rss_mib - first.rss_mib:+.1f} MiB)",
            f"p50: {first.result.pct(50):.2f} ms -> {last.result.pct(50):.2f} ms; "
            f"p99: {first.result.pct(99):.2f} ms -> {last.result.pct(99):.2f} ms",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second, all readers together")
    parser.add_argument("--database", default="sqlite", help="sqlite, postgresql (the test server) or a URL")
    parser.add_argument("--holders", type=int, default=200, help="badged holders the readers present")
    parser.add_argument(
        "--workers", type=int, default=1, help="decision processes on the shared subscription (RSS is their sum)"
    )
    opts = parser.parse_args()
    if opts.minutes <= 0 or opts.rate <= 0:
        parser.error("--minutes and --rate must be positive")
    print(f"# soak: {os.cpu_count()} cores, {opts.minutes:g} min at {opts.rate:,.0f}/s, audit on {opts.database}")
    started = time.monotonic()
    windows = soak(opts.minutes, opts.rate, opts.database, opts.holders, opts.workers)
    print(summary(windows))
    print(f"(wall time {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
