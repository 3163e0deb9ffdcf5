#!/usr/bin/env bash
# Set up everything on a fresh machine and run the whole test suite: the run store's tests
# also run against a real PostgreSQL server started (and stopped) here on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
FANFLOW_TEST_POSTGRES=$(bash scripts/postgres.sh start)
export FANFLOW_TEST_POSTGRES
trap 'bash scripts/postgres.sh stop' EXIT
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
