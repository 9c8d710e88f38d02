#!/usr/bin/env bash
# Sets up everything (apt packages, .venv, the project) and runs the demo. Pass --once to stop after the video.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
