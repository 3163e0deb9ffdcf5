#!/usr/bin/env bash
# Set up a fresh machine for fanflow: a virtual environment with fanflow and its extras.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating the virtual environment .venv"
    "$PYTHON" -m venv .venv
fi
# torch 2.13.0 is pinned in pyproject.toml: a CPU build that pip takes from the machine's disk.
if ! .venv/bin/python -c "import fanflow, ray, hera, psycopg, nbclient, pyte, dask, playwright" 2>/dev/null \
    || [ pyproject.toml -nt .venv/.fanflow-installed ]; then
    echo "setup: installing fanflow and its dependencies into .venv (a few minutes on a fresh machine)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    # One line per package as pip collects it, then what it installed; errors still show in full.
    .venv/bin/python -m pip install --progress-bar off -e '.[dev,ray,export,postgres,bench]' \
        | { grep --line-buffered -E '^(Collecting|Installing collected|Successfully installed)' || true; }
    touch .venv/.fanflow-installed
    echo "setup: done. The fanflow command is .venv/bin/fanflow; to have it on PATH in this shell:"
    echo "    source .venv/bin/activate"
fi
