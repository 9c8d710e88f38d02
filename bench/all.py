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
    "audit": ([], ["--entries", "20000"]),
    "decode": ([], ["--quick"]),
    "desk_batch": ([], ["--holders", "200", "--contingents", "4"]),
    "leads": ([], ["--entries", "20000", "--repeat", "3"]),
    "web_load": (["--minutes", "1", "--clients", "8"], ["--minutes", "0.2", "--clients", "4", "--entries", "5000"]),
    "soak": (["--minutes", "10", "--rate", "1000"], ["--minutes", "0.5", "--rate", "200"]),
}


def run(name: str, args: list[str]) -> tuple[int, float]:
    command = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *args]
    shown = " ".join(["bench/" + name + ".py", *args])
    print(f"\n{'=' * 100}\n$ .venv/bin/python {shown}\n{'=' * 100}", flush=True)
    started = time.monotonic()
    code = subprocess.run(command, cwd=ROOT, check=False).returncode
    return code, time.monotonic() - started


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
    for name in names:
        full, quick = BENCHES[name]
        results[name] = run(name, quick if opts.quick else full)
    print(f"\n{'=' * 100}\n# all benchmarks{' (quick: not figures to quote)' if opts.quick else ''}\n")
    for name, (code, seconds) in results.items():
        print(f"{name:<12} {'ok' if code == 0 else f'FAILED (exit {code})':<18} {seconds:7.0f} s")
    sys.exit(1 if any(code for code, _ in results.values()) else 0)


if __name__ == "__main__":
    main()
