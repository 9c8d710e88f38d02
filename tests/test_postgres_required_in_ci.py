"""Under CI a missing PostgreSQL fails the database tests; on a laptop without one they skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.broker_setup import free_port

ROOT = Path(__file__).resolve().parent.parent
PROBE = "def test_probe(database_url):\n    assert database_url\n"


@pytest.mark.parametrize(("ci", "expected"), [("true", "1 error"), ("", "1 skipped")])
def test_missing_postgres_is_an_error_only_under_ci(tmp_path: Path, ci: str, expected: str) -> None:
    probe = ROOT / "tests" / f"test_zz_probe_{os.getpid()}_{ci or 'laptop'}.py"
    probe.write_text(PROBE)
    try:
        env = {**os.environ, "CI": ci,
               "ACCESSGW_TEST_PG": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test?connect_timeout=2"}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{probe}::test_probe",
             "-k", "postgresql"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
    finally:
        probe.unlink()
    assert expected in done.stdout, done.stdout[-2000:]
