"""Every benchmark, one after the other, with the arguments docs/performance.md quotes; prints every figure.

    .venv/bin/python bench/all.py            # the full set: over an hour on the 2-core machine; run it on a quiet one
    .venv/bin/python bench/all.py --quick    # a smoke run of every script with small sizes (about 7 minutes)
    .venv/bin/python bench/all.py --only soak,web_load

Each script's own output (its tables) is passed through as it comes, under a heading naming the exact command;
at the end, one line per script with its exit status and duration. Exits 1 if any script failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> (full arguments, quick arguments), in the order they run (the soak last: it is the longest).
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "decisions": ([], ["--quick", "--databases", "sqlite"]),
    "db_floor": (["--database", "postgresql"], ["--database", "sqlite", "--seconds", "1"]),
    "audit": ([], ["--entries", "20000"]),
    "decode": ([], ["--quick"]),
    "desk_batch": ([], ["--holders", "200", "--contingents", "4"]),
    "leads": ([], ["--entries", "20000", "--repeat", "3"]),
    "soak": (
        ["--minutes", "10", "--rate", "1000", "--database", "postgresql", "--workers", "2"],
        ["--minutes", "0.5", "--rate", "200"],
    ),
    # Runs beside the soak (started WEB_LOAD_AFTER_S into it): the issue asks for both at once.
    "web_load": (
        ["--minutes", "7", "--clients", "8", "--entries", "100000"],
        ["--minutes", "0.2", "--clients", "4", "--entries", "5000"],
    ),
}
WEB_LOAD_AFTER_S = 75.0


def run(name: str, args: list[str]) -> tuple[int, float]:
    command = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *args]
    shown = " ".join(["bench/" + name + ".py", *args])
    print(f"\n{'=' * 100}\n$ .venv/bin/python {shown}\n{'=' * 100}", flush=True)
    started = time.monotonic()
    code = subprocess.run(command, cwd=ROOT, check=False).returncode
    return code, time.monotonic() - started


def soak_with_web_load(soak_args: list[str], web_args: list[str]) -> dict[str, tuple[int, float]]:
    """The soak, and the web load test started WEB_LOAD_AFTER_S into it; their outputs go to the console in turn."""
    started = time.monotonic()
    print(f"\n{'=' * 100}\n$ .venv/bin/python bench/soak.py {' '.join(soak_args)}", flush=True)
    print(f"$ (after {WEB_LOAD_AFTER_S:.0f} s, beside it) .venv/bin/python bench/web_load.py {' '.join(web_args)}")
    print("=" * 100, flush=True)
    soak = subprocess.Popen([sys.executable, str(ROOT / "bench" / "soak.py"), *soak_args], cwd=ROOT)
    time.sleep(WEB_LOAD_AFTER_S if soak.poll() is None else 0)
    web = subprocess.run([sys.executable, str(ROOT / "bench" / "web_load.py"), *web_args], cwd=ROOT, check=False)
    web_s = time.monotonic() - started
    code = soak.wait()
    return {"soak": (code, time.monotonic() - started), "web_load": (web.returncode, web_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks every script works, no figures")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHES)}")
    opts = parser.parse_args()
    names = [n.strip() for n in opts.only.split(",") if n.strip()] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    results = {}
    together = "soak" in names and "web_load" in names
    for name in names:
        full, quick = BENCHES[name]
        if together and name == "soak":
            results.update(
                soak_with_web_load(full if not opts.quick else quick, BENCHES["web_load"][1 if opts.quick else 0])
            )
        elif not (together and name == "web_load"):
            results[name] = run(name, quick if opts.quick else full)
    print(f"\n{'=' * 100}\n# all benchmarks{' (quick: not figures to quote)' if opts.quick else ''}\n")
    for name, (code, seconds) in results.items():
        print(f"{name:<12} {'ok' if code == 0 else f'FAILED (exit {code})':<18} {seconds:7.0f} s")
    sys.exit(1 if any(code for code, _ in results.values()) else 0)


if __name__ == "__main__":
    main()
