#!/usr/bin/env bash
# Set up a fresh machine for fanflow: a virtual environment with fanflow and its extras.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# torch 2.13.0 is pinned in pyproject.toml: a CPU build that pip takes from the machine's disk.
if ! .venv/bin/python -c "import fanflow, ray, hera, psycopg" 2>/dev/null \
    || [ pyproject.toml -nt .venv/.fanflow-installed ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev,ray,export,postgres]'
    touch .venv/.fanflow-installed
fi
