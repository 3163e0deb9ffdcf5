"""One store per project: every command finds it at the project's root, wherever in the project
it runs; FANFLOW_HOME overrides it. And a run's outputs copied under readable names."""

import json
import shutil

from fanflow.project import find_home
from tests.conftest import ROOT, cli

EXAMPLE = ROOT / "examples" / "fanout_sum"


def test_every_command_finds_the_store_at_the_project_root(tmp_path, monkeypatch):
    monkeypatch.delenv("FANFLOW_HOME", raising=False)
    project = tmp_path / "project"
    deep = project / "flows" / "deep"
    deep.mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    for name in ("workflow.yaml", "steps.py"):
        shutil.copy(EXAMPLE / name, deep / name)
    ran = cli("run", "workflow.yaml", "-p", "n=3", "-p", "delay=0", "--out", "results", cwd=deep, check=True)
    run_id = ran.stderr.split("run ", 1)[1].split()[0]
    assert (project / ".fanflow" / "runs.db").is_file() and not (deep / ".fanflow").exists()
    assert "outputs: 5 files" in ran.stderr and "under results/" in ran.stderr
    assert json.loads((deep / "results" / "total" / "output.json").read_text()) == {"sum": 14, "count": 3}
    assert json.loads((deep / "results" / "square" / "x=3" / "output.json").read_text()) == 9
    (project / "docs").mkdir()
    for where in (project, project / "docs", deep):
        assert run_id in cli("runs", cwd=where, check=True).stdout
    assert "no runs yet" in cli("runs", cwd=deep, env={"FANFLOW_HOME": str(tmp_path / "elsewhere")}).stdout


def test_the_nearest_marked_folder_is_the_root(tmp_path, monkeypatch):
    monkeypatch.delenv("FANFLOW_HOME", raising=False)
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    nested = tmp_path / "repo" / "tools" / "sub"
    nested.mkdir(parents=True)
    assert find_home(nested) == tmp_path / "repo" / ".fanflow"
    (tmp_path / "repo" / "tools" / ".fanflow").mkdir()  # a store already there wins over the repo's root
    assert find_home(nested) == tmp_path / "repo" / "tools" / ".fanflow"
    monkeypatch.setenv("FANFLOW_HOME", str(tmp_path / "h"))
    assert find_home(nested) == tmp_path / "h"
