"""Each broken workflow file gets one clear line naming the file, the line and the field, and
exit code 2, from the real command line; never a traceback."""

import json
import re
from pathlib import Path

import pytest

from tests.conftest import cli

BROKEN = sorted((Path(__file__).parent / "broken").glob("*.yaml"))


def expectation(path: Path) -> tuple[str, int | None]:
    text = path.read_text(encoding="utf-8")
    message = json.loads(re.search(r"^# expect: (.*)$", text, re.M).group(1))
    line = re.search(r"^# line: (.*)$", text, re.M).group(1)
    return message, None if line == "-" else int(line)


def test_there_are_at_least_25_broken_workflows():
    assert len(BROKEN) >= 25


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_workflow_gets_one_clear_error(path):
    message, line = expectation(path)
    result = cli("validate", path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    error = lines[0]
    assert error.startswith(f"error: {path}"), error
    if line is not None:
        assert error.startswith(f"error: {path}:{line}:"), error
    assert message in error, error


def test_run_refuses_a_broken_workflow_the_same_way():
    path = next(p for p in BROKEN if p.stem == "unknown_key_typo")
    result = cli("run", path)
    assert result.returncode == 2
    assert "unknown key 'fan_0ut'" in result.stderr and "Traceback" not in result.stderr


def test_unknown_and_badly_typed_parameters_are_refused(tmp_path):
    flow = tmp_path / "flow.yaml"
    flow.write_text("name: t\nparams: {k: 2}\nsteps:\n  a: {uses: json:dumps, with: {obj: '${params.k}'}}\n")
    unknown = cli("run", flow, "-p", "kk=3", "--home", tmp_path / "h")
    assert unknown.returncode == 2 and "unknown parameter 'kk' (known: k)" in unknown.stderr
    typed = cli("run", flow, "-p", "k=two", "--home", tmp_path / "h")
    assert typed.returncode == 2 and "params.k: expected a value of type int, got 'two'" in typed.stderr
    malformed = cli("run", flow, "-p", "k", "--home", tmp_path / "h")
    assert malformed.returncode == 2 and "expected KEY=VALUE" in malformed.stderr


def test_a_missing_workflow_file_is_one_line():
    result = cli("validate", "does/not/exist.yaml")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: does/not/exist.yaml: no such workflow file (expected a .yaml or .py file)"]
