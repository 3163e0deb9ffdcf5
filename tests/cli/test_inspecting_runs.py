"""Inspecting runs from the command line: one task's attempts and traceback, a failed task's
traceback in its logs, and runs named by a prefix or as ``latest``."""

import json

from tests.conftest import cli, write


def test_show_and_logs_give_a_failed_tasks_traceback_and_runs_resolve_by_prefix(tmp_path):
    folder = tmp_path / "flows"
    folder.mkdir()
    write(folder, "quiet_steps.py", "def explode(n: int) -> int:\n    raise ValueError(f'no {n}')\n")
    flow = write(folder, "flow.yaml", "name: quiet\nsteps:\n  boom: {uses: quiet_steps:explode, with: {n: 3}}\n")
    home = tmp_path / "h"
    first = json.loads(cli("run", flow, "--home", home, "--json").stdout)["run"]
    second = json.loads(cli("run", flow, "--home", home, "--json").stdout)["run"]

    shown = cli("show", "latest", "boom", "--home", home)
    assert shown.returncode == 0, shown.stderr
    assert f"boom (step boom) of run {second}: failed" in shown.stdout
    assert "attempt 1: failed (error)" in shown.stdout and "ValueError: no 3" in shown.stdout
    assert "traceback (attempt 1):" in shown.stdout and 'quiet_steps.py", line 2, in explode' in shown.stdout

    logs = cli("logs", first, "boom", "--home", home)
    assert logs.returncode == 0
    assert "(attempt 1, traceback)" in logs.stderr and "ValueError: no 3" in logs.stderr
    assert "no output" not in logs.stderr

    prefix = first[:4]  # both runs start with the year
    ambiguous = cli("show", prefix, "--home", home)
    assert ambiguous.returncode == 2 and "Traceback" not in ambiguous.stderr
    [line] = ambiguous.stderr.strip().splitlines()
    assert line.startswith(f"error: '{prefix}' matches several runs: ") and first in line and second in line
    assert cli("show", second, "--home", home).returncode == 0
    missing = cli("show", "nope", "--home", home)
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr
