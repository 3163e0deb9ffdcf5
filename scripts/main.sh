#!/usr/bin/env bash
# Set up everything on a fresh machine and run the main job: the example fan-out / fan-in
# workflow end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/fanflow run examples/fanout_sum/workflow.yaml "$@"
