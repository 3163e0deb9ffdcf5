"""fanflow from Python: run a flow, read its Run (states, timings, outputs, files), read past
runs, and get the command line's errors as exceptions. Real runs in worker processes."""

import asyncio
import importlib
import json
import subprocess
import sys
import time

import numpy as np
import pytest

import fanflow
from fanflow.project import Project
from tests.conftest import cli, write

FLOW = '''
import numpy as np

from fanflow import flow, item, params

wf = flow("api-demo", params={"n": 3, "fail": False})


@wf.step()
def numbers(n: int = params.n) -> list[int]:
    return list(range(1, n + 1))


@wf.step(fan_out={"x": numbers.output})
def square(x: int = item.x, fail: bool = params.fail) -> dict:
    if fail and x == 2:
        raise ValueError("<b>two</b> is not welcome")
    return {"y": x * x, "array": np.full(3, x)}


@wf.step()
def total(values: list = square.all()) -> dict:
    return {"sum": sum(v["y"] for v in values)}
'''


@pytest.fixture
def demo(workdir, tmp_path):
    """The flow above, in a module of its own (a fresh name per test)."""
    name = f"demo_{abs(hash(str(tmp_path)))}"
    write(workdir, f"{name}.py", FLOW)
    return importlib.import_module(name)


def test_wf_run_returns_the_run_with_states_timings_and_lazy_outputs(demo, home):
    run = demo.wf.run(n=4, home=home)
    assert isinstance(run, fanflow.Run) and run.state == "succeeded" and run.succeeded
    assert list(run.tasks) == ["numbers", "square[x=1]", "square[x=2]", "square[x=3]", "square[x=4]", "total"]
    assert all(t.state == "succeeded" and t.duration >= 0 and t.attempts == 1 for t in run.tasks.values())
    assert run.tasks["square[x=3]"].item == {"x": 3}
    assert run.params == {"n": 4, "fail": False} and run.duration > 0
    assert run["total"] == {"sum": 1 + 4 + 9 + 16} and run.results == {"total": {"sum": 30}}
    squares = run.outputs["square"]  # a fanned-out step: its branches, in declared order
    assert [s["y"] for s in squares] == [1, 4, 9, 16] and isinstance(squares[1]["array"], np.ndarray)
    assert list(run.outputs) == ["numbers", "square", "total"]
    files = run.artifacts["square[x=2]"]
    assert files["array"].is_file() and files["array"].suffix == ".npy" and files["y"] == 4
    again = demo.wf.run(n=4, home=home)
    assert all(t.cached for t in again.tasks.values()) and again.id != run.id


def test_fanflow_run_takes_a_file_and_past_runs_are_read_back(demo, home, workdir):
    path = workdir / f"{demo.__name__}.py"
    first = fanflow.run(path, n=2, home=home)
    second = fanflow.run(str(path), params={"n": 3}, home=home, cache=False)
    assert first["total"] == {"sum": 5} and second["total"] == {"sum": 14}
    assert [r.id for r in fanflow.runs(home=home)] == [second.id, first.id]
    back = fanflow.Run.get(first.id[:-1], home=home)  # a unique prefix
    assert back.id == first.id and back["total"] == {"sum": 5} and back.tasks.keys() == first.tasks.keys()
    with pytest.raises(fanflow.RunNotFound, match="no run 'nope'"):
        fanflow.Run.get("nope", home=home)


def test_user_errors_raise_spec_error_and_a_failed_run_raises_run_failed(demo, home):
    with pytest.raises(fanflow.SpecError, match=r"params\.m: unknown parameter 'm'"):
        demo.wf.run(m=1, home=home)
    with pytest.raises(fanflow.RunFailed, match=r"square\[x=2\]: ValueError: <b>two</b> is not welcome") as failed:
        demo.wf.run(fail=True, home=home)
    run = failed.value.run
    assert run.state == "failed" and run.tasks["square[x=2]"].state == "failed"
    kept = demo.wf.run(fail=True, home=home, raise_on_failure=False)
    assert kept.state == "failed" and kept.id != run.id
    with pytest.raises(KeyError, match=r"step 'total' of run .* has no output \(total skipped"):
        kept["total"]
    html = kept._repr_html_()
    assert "&lt;b&gt;two&lt;/b&gt;" in html and "<b>two</b>" not in html
    assert '<td style="color:#cf222e">failed</td>' in html and "square[x=1]" in html


def test_outputs_are_written_under_readable_names(demo, home, tmp_path):
    run = demo.wf.run(n=2, home=home)
    written = run.export(tmp_path / "out")
    names = sorted(str(f.path.relative_to(tmp_path / "out")) for f in written)
    assert names == ["numbers/output.json", "square/x=1/array.npy", "square/x=1/output.json",
                     "square/x=2/array.npy", "square/x=2/output.json", "total/output.json"]
    assert np.load(tmp_path / "out/square/x=2/array.npy").tolist() == [2, 2, 2]
    assert json.loads((tmp_path / "out/square/x=2/output.json").read_text()) == {"array": "array.npy", "y": 4}
    listing = cli("artifacts", run.id, "--home", home, check=True).stdout
    assert "square/x=2/array.npy" in listing and "/artifacts/objects/" in listing
    copied = cli("artifacts", run.id, "--home", home, "--out", tmp_path / "cli", check=True)
    assert "outputs: 6 files" in copied.stderr and (tmp_path / "cli/total/output.json").is_file()


def test_run_async_runs_and_a_cancelled_await_stops_the_run(workdir, home):
    write(workdir, "slow_steps.py", "import time\n\ndef nap(seconds):\n    time.sleep(seconds)\n    return seconds\n")
    spec = fanflow.load_workflow(write(workdir, "slow.yaml", """
        name: slow
        params: {seconds: 0.0}
        steps:
          nap: {uses: "slow_steps:nap", with: {seconds: "${params.seconds}"}}
        """))
    assert asyncio.run(fanflow.run_async(spec, home=home))["nap"] == 0.0

    async def cancel_soon():
        task = asyncio.ensure_future(fanflow.run_async(spec, home=home, seconds=60))
        await asyncio.sleep(3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.time()
    asyncio.run(cancel_soon())
    assert time.time() - started < 30
    latest = fanflow.runs(1, home=home)[0]
    assert latest.state == "cancelled" and latest.tasks["nap"].state == "cancelled"


def test_a_script_that_runs_its_own_flow_ships_its_steps_instead_of_importing_itself(workdir, home):
    # No `if __name__ == "__main__"` guard: a worker importing the script would run it again.
    script = write(workdir, "script.py", FLOW + '''
run = wf.run(n=3)
print("RESULT", run["total"]["sum"], run.tasks["numbers"].state)
''')
    result = subprocess.run([sys.executable, str(script)], cwd=workdir, capture_output=True, text=True,
                            timeout=120, env={**__import__("os").environ, "FANFLOW_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "RESULT 14 succeeded"
    uses = {s["uses"] for s in Project(home).store.list_runs(1)[0].spec["steps"].values()}
    assert all(u.startswith("fanflow.shipped.sha256_") for u in uses)
