"""Web side under load: concurrent logged-in clients over HTTP against `python -m gateway web`.

    .venv/bin/python bench/web_load.py [--minutes 1] [--clients 8] [--entries 100000] [--database sqlite|postgresql|URL]

A fresh instance gets 20,000 holders in 40 organisations and `--entries` audit entries (decisions across every
gate, passages, alarms: bench/leads.py's generator, so the chain is valid). The web side runs as its own process
(`python -m gateway web`, the production server). Half the clients log in as badge desk staff and cycle through
the desk's pages (holder search, a holder's page, organisations), the other half as security leads through the
audit search (newest decisions, by gate and verdict, by name, a holder's trail, gate traffic). Every client waits
for each answer before asking again (closed loop, no think time), so the figures are what the server sustains.
Prints requests/s and p50/p99 per page, and any answer other than 200. Copy the table into docs/performance.md
("Web side under load").
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.leads import database, fill, fill_people  # noqa: E402  (bench/leads.py: audit filler, reused as is)
from gateway.broker_setup import free_port  # noqa: E402
from gateway.cli import add_operator, sync_site  # noqa: E402
from gateway.db.engine import make_engine, session_factory, upgrade  # noqa: E402
from gateway.instance import create_instance, load_instance  # noqa: E402
from gateway.site import load_site  # noqa: E402

PASSWORD = "load-test-password-1"
_CSRF = re.compile(rb'name="csrf_token"[^>]*value="([^"]+)"')


def desk_pages(holder: str) -> dict[str, str]:
    return {
        "desk: holder search": "/desk/holders?" + urlencode({"q": "Weber1"}),
        "desk: holder list, page 3": "/desk/holders?page=3",
        "desk: a holder": f"/desk/holders/{holder}",
        "desk: organisations": "/desk/organisations",
    }


def lead_pages(holder: str) -> dict[str, str]:
    return {
        "audit search: newest decisions": "/leads/search",
        "audit search: gate + denials": "/leads/search?" + urlencode({"gate": "STA-G1", "decision": "deny"}),
        "audit search: by name": "/leads/search?" + urlencode({"name": "Weber"}),
        "audit: a holder's trail": f"/leads/trail/{holder}",
        "audit: gate traffic": "/leads/traffic",
    }


class Client:
    """One browser's worth of HTTP: a keep-alive-less connection per request, the session cookie kept by hand
    (the gateway's cookies are Secure, which http.cookiejar would never send over plain HTTP)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
            if body is not None:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            for header in response.msg.get_all("Set-Cookie") or []:
                name, _, rest = header.partition("=")
                self.cookies[name.strip()] = rest.split(";", 1)[0]
            return response.status, data
        finally:
            conn.close()

    def login(self, username: str) -> None:
        status, page = self.request("GET", "/login")
        token = _CSRF.search(page)
        if status != 200 or token is None:
            raise RuntimeError(f"no login form (HTTP {status})")
        form = urlencode({"csrf_token": token.group(1).decode(), "username": username, "password": PASSWORD})
        status, _ = self.request("POST", "/login", form.encode())
        if status != 302:
            raise RuntimeError(f"login of {username} refused (HTTP {status})")


@dataclass
class PageStats:
    latencies_ms: list[float] = field(default_factory=list)
    failures: dict[int, int] = field(default_factory=dict)  # HTTP status -> count

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def run_client(port: int, username: str, pages: dict[str, str], until: float, stats: dict[str, PageStats],
               lock: threading.Lock) -> None:  # fmt: skip
    client = Client(port)
    client.login(username)
    names = list(pages)
    i = 0
    while time.perf_counter() < until:
        name = names[i % len(names)]
        i += 1
        started = time.perf_counter()
        status, _ = client.request("GET", pages[name])
        took = (time.perf_counter() - started) * 1000
        with lock:
            page = stats.setdefault(name, PageStats())
            if status == 200:
                page.latencies_ms.append(took)
            else:
                page.failures[status] = page.failures.get(status, 0) + 1


def prepare(work: Path, url: str, entries: int) -> tuple[Path, str]:
    """A web instance with holders, an audit of `entries` entries, and one desk and one lead operator."""
    site = load_site(ROOT / "zones.yaml")
    folder = work / "instance"
    create_instance(folder, url, ROOT / "zones.yaml", site.code)
    upgrade(url)
    instance = load_instance(folder)
    sync_site(instance, site)
    sessions = session_factory(make_engine(url))
    people = fill_people(sessions)
    fill(sessions, site, people, entries)
    add_operator(instance, "loaddesk", "desk", PASSWORD)
    add_operator(instance, "loadlead", "lead", PASSWORD)
    return folder, people[60][0]


def start_web(folder: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "web", "--instance", str(folder), "--port", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ACCESSGW_LOG_LEVEL": "WARNING"},
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the web side exited: {log.read_text()[-2000:]}")
        try:
            Client(port).request("GET", "/login")
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the web side did not answer within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=8, help="concurrent logged-in clients (half desk, half leads)")
    parser.add_argument("--entries", type=int, default=100_000, help="audit entries in the instance")
    parser.add_argument("--database", default="sqlite", help="sqlite, postgresql (the test server) or a URL")
    opts = parser.parse_args()
    if opts.minutes <= 0 or opts.clients < 2:
        parser.error("--minutes must be positive and --clients at least 2")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pg = os.environ.get("ACCESSGW_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
        url, schema = database({"sqlite": None, "postgresql": pg}.get(opts.database, opts.database), work)
        try:
            print(f"# web load: {os.cpu_count()} cores, {opts.clients} clients, {opts.minutes:g} min, "
                  f"{opts.entries:,} audit entries on {opts.database}")  # fmt: skip
            folder, holder = prepare(work, url, opts.entries)
            port = free_port()
            web = start_web(folder, port, work / "web.log")
            try:
                stats: dict[str, PageStats] = {}
                lock = threading.Lock()
                started = time.perf_counter()
                until = started + opts.minutes * 60
                threads = []
                for n in range(opts.clients):
                    user, pages = ("loaddesk", desk_pages(holder)) if n % 2 == 0 else ("loadlead", lead_pages(holder))
                    threads.append(
                        threading.Thread(target=run_client, args=(port, user, pages, until, stats, lock), daemon=True)
                    )
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                elapsed = time.perf_counter() - started
            finally:
                web.terminate()
                web.wait(10)
        finally:
            if schema:
                from sqlalchemy import create_engine, text

                with create_engine(pg).begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    print("\n| page | requests | requests/s | p50 ms | p99 ms | not 200 |\n|---|---|---|---|---|---|")
    total = 0
    for name, page in sorted(stats.items()):
        total += len(page.latencies_ms)
        failures = ", ".join(f"{n} x HTTP {code}" for code, n in sorted(page.failures.items())) or "0"
        print(f"| {name} | {len(page.latencies_ms):,} | {len(page.latencies_ms) / elapsed:,.1f} | {page.pct(50):.1f} "
              f"| {page.pct(99):.1f} | {failures} |")  # fmt: skip
    print(f"\nweb load summary: {total:,} pages in {elapsed:.0f} s, {total / elapsed:,.1f} pages/s with "
          f"{opts.clients} clients")  # fmt: skip


if __name__ == "__main__":
    main()
