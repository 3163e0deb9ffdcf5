"""What the fault-injection tests share: workflows with their steps, and a small real file
system to fill up."""

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import write

STEPS = Path(__file__).with_name("fault_steps.py")


@pytest.fixture
def flows(workdir):
    """Write a workflow file next to a copy of the fault steps; returns a writer."""
    shutil.copy(STEPS, workdir / "fault_steps.py")

    def make(text: str, name: str = "flow.yaml") -> Path:
        return write(workdir, name, text)

    return make


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of a few MiB (tmpfs) to fill up; mounting one needs root."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk is made with a small tmpfs, and mounting one needs root")
    mounted = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def one_clean_line(result) -> str:
    """The one line a failing command prints, checked to be that and no traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]
