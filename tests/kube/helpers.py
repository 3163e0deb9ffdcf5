"""Helpers of the Kubernetes tests: paths, and fanflow's Kubernetes commands run as real
processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
EXAMPLES = HERE / "examples"
GOLDEN = HERE / "golden"
IMAGE = "ghcr.io/example/fanflow:0.1.0"
STORE = "s3://fanflow-artifacts/runs"
FANOUT = ROOT / "examples" / "fanout_sum"
REFERENCE = ROOT / "examples" / "video_entity_tagging" / "workflow.yaml"


def run_kube(*args: str, cwd: Path | str = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m fanflow.cli.kube ARGS`` as a real process."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fanflow.cli.kube", *map(str, args)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def update_goldens() -> bool:
    """``FANFLOW_UPDATE_GOLDENS=1 pytest tests/kube`` rewrites the golden files."""
    return os.environ.get("FANFLOW_UPDATE_GOLDENS", "") not in ("", "0")


class Handed:
    """A run's result, and the inputs the engine handed the executor for each task (by name,
    its last attempt's): a finished run keeps no task's inputs, so they are taken on the way.
    The run uses no cache, so that every task reaches the executor (as every task runs on
    Argo)."""

    def __init__(self, result, inputs: dict[str, dict]):
        self.result = result
        self.inputs = inputs


def run_capturing_inputs(
    workflow_path: Path, home: Path, params: dict | None = None, executor: str = "local"
):
    from fanflow.project import Project
    from fanflow.spec.loader import load_workflow

    project = Project(home)
    try:
        runner = project.runner(load_workflow(workflow_path), params=params, executor=executor, cache=False)
        inputs: dict[str, dict] = {}
        submit = runner.executor.submit

        def capture(spec):
            inputs[spec.task] = spec.inputs
            submit(spec)

        runner.executor.submit = capture
        return Handed(runner.run(), inputs)
    finally:
        project.close()
