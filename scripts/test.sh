#!/usr/bin/env bash
# Runs every test: lint and type checks of the core, then pytest against real Mosquitto, SQLite,
# PostgreSQL, libosdp and Chromium. Sets up what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/postgres.sh
if [ -f .venv/pg.env ]; then source .venv/pg.env; fi

echo "== ruff"
.venv/bin/ruff check gateway readers firmware_bridge tests bench scripts
echo "== mypy (decision core and wire contract)"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/pytest -q "$@"
