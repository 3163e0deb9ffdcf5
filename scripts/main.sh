#!/usr/bin/env bash
# Set up everything on a fresh machine and run the main job: the reference workflow end to
# end (ingest clips, train the zoo in parallel, serve the two best behind the ensemble
# gateway, tag the held-out clips through it and print the coverage report).
# Extra arguments go to `fanflow run`, e.g. -p seed=1 or --serve.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/fanflow run examples/video_entity_tagging/workflow.yaml "$@"
