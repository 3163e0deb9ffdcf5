import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path):
    """A fresh project folder for runs, artifacts and logs."""
    path = tmp_path / ".fanflow"
    path.mkdir()
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder for workflow files and their step modules."""
    folder = tmp_path / "flows"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def cli(*args, cwd=None, env=None, timeout=120, check=False):
    """Run the real `fanflow` command line in a subprocess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "fanflow.cli.main", *map(str, args)], cwd=cwd, env=full_env,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"fanflow {' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result
