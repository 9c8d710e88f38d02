#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers for the database tests. Uses the one on 127.0.0.1:5432 when it
# answers; otherwise installs Debian's postgresql, starts a cluster and exports a socket URL for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${ACCESSGW_TEST_PG:-}" ]; then exit 0; fi
if .venv/bin/python - <<'PY' 2>/dev/null
import psycopg
psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3).close()
PY
then
  exit 0
fi
echo "== no PostgreSQL on 127.0.0.1:5432 with database 'test': setting one up"
SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! command -v pg_ctlcluster >/dev/null; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends postgresql
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
$SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
me=$(id -un)
$SUDO -u postgres psql -qtc "SELECT 1 FROM pg_roles WHERE rolname='$me'" | grep -q 1 || $SUDO -u postgres createuser -s "$me"
$SUDO -u postgres psql -qtc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 || $SUDO -u postgres createdb -O "$me" test
echo "export ACCESSGW_TEST_PG=postgresql+psycopg:///test?host=/var/run/postgresql" > .venv/pg.env
