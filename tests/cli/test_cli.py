"""The command line, run as a real program."""

import json
import shutil
import subprocess
import sys

from tests.conftest import ROOT, cli, write

EXAMPLE = ROOT / "examples" / "fanout_sum" / "workflow.yaml"
STEPS = ROOT / "tests" / "engine" / "flowsteps.py"


def test_validate_says_what_it_checked():
    result = cli("validate", EXAMPLE, check=True)
    assert "workflow 'fanout-sum', 3 steps (numbers, square, total)" in result.stdout


def test_validate_imports_none_of_the_modules_other_commands_need():
    script = (
        "import sys\n"
        "from fanflow.cli.main import app\n"
        "try:\n"
        f"    app(['validate', {str(EXAMPLE)!r}])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print('loaded:', sorted(m for m in sys.modules if m.startswith(('fanflow.cli.', 'fanflow.engine', "
        "'fanflow.executors'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "loaded: ['fanflow.cli.common', 'fanflow.cli.main', 'fanflow.cli.workflows']" in done.stdout


def test_a_misspelt_command_is_named_with_the_one_meant():
    result = cli("valdate", EXAMPLE)
    assert result.returncode == 2
    assert "No such command 'valdate'. Did you mean 'validate'?" in result.stderr


def test_steps_see_pydantic_plugins_enabled_even_though_validate_skips_them(tmp_path):
    flows = tmp_path / "flows"
    flows.mkdir()
    write(flows, "plugin_steps.py", """
        import os

        def plugins():
            return os.environ.get("PYDANTIC_DISABLE_PLUGINS", "enabled")
        """)
    flow = write(flows, "flow.yaml", """
        name: plugins
        steps:
          plugins: {uses: plugin_steps:plugins}
        """)
    assert cli("validate", flow, check=True).returncode == 0
    result = cli("run", flow, "--home", tmp_path / "h", check=True)
    assert "'enabled'" in result.stdout or '"enabled"' in result.stdout, result.stdout


def test_graph_draws_fan_out_and_fan_in_in_mermaid_and_dot(tmp_path):
    mermaid = cli("graph", EXAMPLE, check=True).stdout
    assert mermaid.startswith("flowchart LR")
    assert "× x: ${numbers}" in mermaid  # a dynamic fan-out
    assert 'n_square ==>|"[*]"| n_total' in mermaid  # a fan-in edge
    dot = cli("graph", EXAMPLE, "--format", "dot", check=True).stdout
    assert '"square" [label="square\\nsquare\\n× x: ${numbers}", shape=box3d]' in dot
    assert '"square" -> "total" [penwidth=2.5, label="[*]"]' in dot
    bad = cli("graph", EXAMPLE, "--format", "svg")
    assert bad.returncode == 2 and "expected mermaid, dot or png" in bad.stderr


def test_run_show_runs_and_logs_tell_the_story_of_a_failed_run(tmp_path):
    flows = tmp_path / "flows"
    flows.mkdir()
    shutil.copy(STEPS, flows / "flowsteps.py")
    write(flows, "f.yaml", """
        name: story
        on_failure: continue
        steps:
          say: {uses: flowsteps:talk, with: {text: hi}}
          shaky: {uses: flowsteps:fail_unless, with: {flag: /no/such/flag}, retries: 1, retry_backoff: 0}
        """)
    home = tmp_path / "home"
    result = cli("run", "f.yaml", "--home", home, cwd=flows)
    assert result.returncode == 1
    assert "shaky: RuntimeError: /no/such/flag is missing" in result.stderr
    run_id = result.stderr.split("run ", 1)[1].split()[0]
    assert f"fanflow resume {run_id}" in result.stderr
    listing = cli("runs", "--home", home, check=True).stdout
    assert run_id[:12] in listing and "failed" in listing
    shown = cli("show", run_id, "--home", home, check=True).stdout
    assert "shaky failed attempts=2" in shown and "attempt 1: retrying" in shown
    as_json = json.loads(cli("show", run_id, "--home", home, "--json", check=True).stdout)
    assert {t["name"]: t["state"] for t in as_json["tasks"]} == {"say": "succeeded", "shaky": "failed"}
    logs = cli("logs", run_id, "say", "--home", home, check=True)
    assert "out: hi" in logs.stdout
    missing = cli("logs", run_id, "nope", "--home", home)
    assert missing.returncode == 2 and "has no task 'nope'" in missing.stderr
    unknown = cli("show", "no-such-run", "--home", home)
    assert unknown.returncode == 2 and "no run 'no-such-run'" in unknown.stderr


def test_run_prints_the_result_and_a_summary(tmp_path):
    result = cli("run", EXAMPLE, "-p", "n=3", "-p", "delay=0", "--home", tmp_path / "h", check=True)
    assert '"sum": 14' in result.stdout
    assert "succeeded" in result.stderr and "(5 tasks: 5 succeeded)" in result.stderr


def test_version():
    assert cli("--version", check=True).stdout.startswith("fanflow ")


SUMMARY_STEPS = """
from pathlib import Path

def board(n):
    return {"best": n, "run_summary": "## Board\\n\\n| model | score |\\n|---|---|\\n| alpha | 0.9 |\\n"}

def notes(scratch):
    path = Path(scratch) / "notes.md"
    path.write_text("## Notes\\n\\nwritten as a file\\n")
    return {"run_summary": path}

def total(best, fail=False):
    if fail:
        raise ValueError("the bar was missed by 0.1")
    return {"total": best}
"""

SUMMARY_FLOW = """
name: summaries
params: {fail: false}
steps:
  board: {uses: summary_steps:board, with: {n: 3}}
  notes: {uses: summary_steps:notes, with: {scratch: SCRATCH}}
  total: {uses: summary_steps:total, with: {best: "${board.best}", fail: "${params.fail}"}, needs: [notes]}
"""


def test_a_steps_run_summary_is_printed_before_the_results_even_when_a_later_step_fails(tmp_path):
    """Any step, not only a last one, may give the run's summary Markdown (text or a file)
    under ``run_summary``: it is printed in step order before the results, and also when a
    later step fails."""
    write(tmp_path, "summary_steps.py", SUMMARY_STEPS)
    flow = write(tmp_path, "summaries.yaml", SUMMARY_FLOW.replace("SCRATCH", str(tmp_path)))
    home = tmp_path / ".fanflow"
    ok = cli("run", flow, "--home", home, check=True)
    assert ok.stdout.index("Board") < ok.stdout.index("alpha") < ok.stdout.index("written as a file")
    assert ok.stdout.index("written as a file") < ok.stdout.index('"total": 3')
    failed = cli("run", flow, "-p", "fail=true", "--home", home)
    assert failed.returncode == 1 and "alpha" in failed.stdout and "written as a file" in failed.stdout
    assert "the bar was missed by 0.1" in failed.stderr
    as_json = json.loads(cli("run", flow, "--json", "--home", home, check=True).stdout)
    assert list(as_json["summaries"]) == ["board", "notes"] and "| alpha | 0.9 |" in as_json["summaries"]["board"]
