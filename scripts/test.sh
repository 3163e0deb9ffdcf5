#!/usr/bin/env bash
# Set up everything on a fresh machine and run the whole test suite: the run store's tests
# also run against a real PostgreSQL server started (and stopped) here on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The web UI's browser tests drive Chromium through Playwright; Playwright's own browser
# download does not work here, so they use the system's (Debian's chromium package).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "test: installing Chromium for the browser tests"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq chromium >/dev/null
    else
        echo "test: Chromium is missing and this is not root: run 'sudo apt-get install -y chromium'" \
            "(the web UI's browser tests need it), then run this again" >&2
        exit 1
    fi
fi
FANFLOW_TEST_POSTGRES=$(bash scripts/postgres.sh start)
export FANFLOW_TEST_POSTGRES
trap 'bash scripts/postgres.sh stop' EXIT
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
