"""Each broken workflow file gets one clear line naming the file, the line and the field, and
exit code 2, from the real command line; never a traceback, and within 5 s and 200 MB.

``broken/`` holds mistakes in a workflow's meaning; ``corpus/`` holds files that are not
workflows in harder ways: YAML bombs, deep nesting, tags, odd keys, strict parameter
declarations, and steps that ``run`` would refuse (not callable, a fan-out over a number, a
module named like the standard library, a flow file that exits on import, a ``with`` its
function cannot take). They run through the command line's entry point in a few processes
(see ``corpus_driver``); the largest cases run through the ``fanflow`` program itself, each
in a process of its own whose peak memory is measured."""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli

HERE = Path(__file__).parent
BROKEN = sorted((HERE / "broken").glob("*.yaml"))
CORPUS = sorted(p for p in (HERE / "corpus").rglob("*") if p.is_file() and b"\n# expect: " in p.read_bytes())
PROCESSES = 3
SECONDS, MEGABYTES = 5.0, 200


def expectation(path: Path) -> tuple[str, int | None]:
    text = path.read_text(encoding="utf-8", errors="replace")
    message = json.loads(re.search(r"^# expect: (.*)$", text, re.M).group(1))
    line = re.search(r"^# line: (.*)$", text, re.M).group(1)
    return message, None if line == "-" else int(line)


def test_there_are_at_least_25_broken_workflows_and_80_more_in_the_corpus():
    assert len(BROKEN) >= 25 and len(CORPUS) >= 80


@pytest.fixture(scope="module")
def checked() -> dict[str, dict]:
    """Every file validated by the command line, a few processes at once."""
    files = [str(p.relative_to(ROOT)) for p in BROKEN + CORPUS]
    chunks = [files[i::PROCESSES] for i in range(PROCESSES)]
    env = {**os.environ, "COLUMNS": "200"}
    drivers = [subprocess.Popen([sys.executable, "-m", "tests.spec.corpus_driver", *chunk], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for chunk in chunks]
    results = {}
    for driver in drivers:
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err
        for line in out.splitlines():
            result = json.loads(line)
            results[result["file"]] = result
    return results


@pytest.mark.parametrize("path", BROKEN + CORPUS, ids=[str(p.relative_to(HERE)) for p in BROKEN + CORPUS])
def test_broken_workflow_gets_one_clear_error(path, checked):
    message, line = expectation(path)
    shown = str(path.relative_to(ROOT))
    result = checked[shown]
    assert result["code"] == 2, result
    assert "Traceback" not in result["stderr"]
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1, result["stderr"]
    error = lines[0]
    named = next((f for f in (shown, str(path)) if error.startswith(f"error: {f}")), None)
    assert named, error  # the file as given (a Python flow file is named by its full path)
    if line is not None:
        assert error.startswith(f"error: {named}:{line}:"), error
    assert message in error, error
    assert result["seconds"] < SECONDS and result["peak_mb"] < MEGABYTES, result


def _fanflow(*args, cwd=ROOT) -> tuple[subprocess.CompletedProcess, float, float]:
    """The ``fanflow`` program (``python -m fanflow.cli.main``) in a process of its own: its
    result, seconds, and that process's peak memory in MB."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "peak"
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "tests.spec.corpus_driver", "--program", str(report),
                                 *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "COLUMNS": "200"})
        seconds = time.perf_counter() - started
        return result, seconds, float(report.read_text())


@pytest.mark.parametrize("name", ["yaml_bomb_billion_laughs.yaml", "nested_3000_levels_of_lists.yaml"])
def test_the_worst_files_are_refused_quickly_and_in_little_memory_by_the_program(name):
    result, seconds, peak = _fanflow("validate", HERE / "corpus" / name)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert seconds < SECONDS and peak < MEGABYTES, (seconds, peak)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "w", encoding="utf-8") as f:
        f.write("name: huge\nsteps:\n  s: {uses: json:dumps, with: {obj: 1}}\n")
        f.write(("# " + "x" * 1022 + "\n") * (17 * 1024))
    result, seconds, peak = _fanflow("validate", path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {path}: the file is 17.0 MiB; a workflow file may be at most 16 MiB " \
        "(keep large data in files that steps read)"
    assert seconds < SECONDS and peak < MEGABYTES, (seconds, peak)


def test_a_legal_5_mb_workflow_validates_in_seconds(tmp_path):
    (tmp_path / "large_steps.py").write_text("def run(seed, values, label):\n    return len(values)\n")
    lines = ["name: large", "params: {seed: 0}", "steps:"]
    size, i = 0, 0
    while size < 5 * 2**20:
        step = (f"  s{i}:\n    uses: large_steps:run\n    with:\n      seed: ${{params.seed}}\n"
                f"      values: [{', '.join(str(j) for j in range(300))}]\n      label: step {i}\n"
                + (f"    needs: [s{i - 1}]\n" if i % 7 == 6 else ""))
        lines.append(step.rstrip("\n"))
        size, i = size + len(step), i + 1
    path = tmp_path / "large.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result, seconds, peak = _fanflow("validate", path)
    assert result.returncode == 0 and f"{i} steps" in result.stdout, result.stderr
    # Seconds, not minutes: the machine is shared, so the bound is generous; see docs/stores.md.
    assert seconds < 30, seconds
    assert peak < 400, peak


def test_a_folder_given_as_the_workflow_says_so(tmp_path):
    (tmp_path / "flow.yaml").write_text("name: t\nsteps:\n  s: {uses: json:dumps, with: {obj: 1}}\n")
    result = cli("validate", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {tmp_path}: is a folder, not a workflow file: give a .yaml or .py "
                                     "file (it holds flow.yaml)")


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
