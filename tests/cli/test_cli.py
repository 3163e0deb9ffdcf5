"""The command line, run as a real program."""

import json
import shutil

from tests.conftest import ROOT, cli, write

EXAMPLE = ROOT / "examples" / "fanout_sum" / "workflow.yaml"
STEPS = ROOT / "tests" / "engine" / "flowsteps.py"


def test_validate_says_what_it_checked():
    result = cli("validate", EXAMPLE, check=True)
    assert "workflow 'fanout-sum', 3 steps (numbers, square, total)" in result.stdout


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
