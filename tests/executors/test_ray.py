"""The Ray executor: resources, crashes, stopping, log capture, its own Ray instance."""

import json
import os
import re
import subprocess
import sys
import time

import psutil
import pytest

from fanflow.executors.base import TaskSpec
from fanflow.project import Project
from fanflow.spec.loader import load_workflow
from fanflow.vocab.states import State
from tests.conftest import ROOT, cli, write

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

STEPS = """
import os
import subprocess
import sys
import time
from pathlib import Path


def granted() -> dict:
    import ray

    return {"ray": ray.get_runtime_context().get_assigned_resources(), "cpus": os.environ["FANFLOW_CPUS"]}


def crash_once(marker: str) -> int:
    if not Path(marker).exists():
        Path(marker).touch()
        os._exit(3)
    return os.getpid()


def hang(pid_file: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
    Path(pid_file).write_text(f"{os.getpid()} {child.pid}")
    time.sleep(1000)


def talk(text: str) -> str:
    print(f"out: {text}", flush=True)
    print(f"err: {text}", file=sys.stderr, flush=True)
    subprocess.run(["echo", f"child: {text}"], check=True)
    return text


def numbers(n: int) -> list:
    return list(range(n))


def tiny(x: int, crash_on: int = -1, fail_on: int = -1, marker: str = "") -> int:
    if x == crash_on and not Path(marker).exists():
        Path(marker).touch()
        os._exit(3)
    if x == fail_on:
        raise ValueError(f"tiny {x} failed")
    return x


def version(x: int) -> dict:
    time.sleep(0.2)
    return {"v": 1, "pid": os.getpid()}
"""


@pytest.fixture(scope="module")
def ray_instance():
    """The test session's local Ray instance, or one for this module."""
    if ray.is_initialized():
        yield
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def steps(workdir, ray_instance):
    write(workdir, "raysteps.py", STEPS)
    return workdir


def run(home, folder, text, **options):
    project = Project(home)
    try:
        return project.run(load_workflow(write(folder, "flow.yaml", text)), executor="ray", **options)
    finally:
        project.close()


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def _wait_until(check, seconds: float = 10.0) -> bool:
    deadline = time.time() + seconds
    while not check() and time.time() < deadline:
        time.sleep(0.05)
    return check()


def test_capacity_is_the_clusters_and_resources_become_ray_resources(steps, home):
    from fanflow.executors.ray import RayExecutor

    capacity = RayExecutor().capacity()
    assert capacity["cpus"] == 2 and capacity["gpus"] == 0 and capacity["memory"] > 2**20
    result = run(home, steps, """
        name: res
        steps:
          two: {uses: raysteps:granted, resources: {cpus: 2, memory: 64Mi}}
          half: {uses: raysteps:granted, resources: {cpus: 0.5}}
        """)
    assert result.state == "succeeded", result.error
    assert result.outputs("two") == [{"ray": {"CPU": 2.0, "memory": 64 * 2**20}, "cpus": "2"}]
    assert result.outputs("half") == [{"ray": {"CPU": 0.5}, "cpus": "1"}]


def test_a_gpu_request_on_a_cpu_only_cluster_is_refused_up_front(steps, home):
    result = run(home, steps, "name: gpu\nsteps:\n  a: {uses: raysteps:granted, resources: {gpus: 1}}\n")
    assert result.state == "failed"
    assert result.error == "step a asks for 1 gpus; the ray executor has 0"
    assert result.tasks == {}  # nothing was started


def test_a_crashed_worker_is_reported_as_crashed_and_retried(steps, home, tmp_path):
    result = run(home, steps, f"""
        name: crash
        steps:
          a: {{uses: raysteps:crash_once, with: {{marker: "{tmp_path / 'crashed'}"}}, retries: 1, retry_backoff: 0}}
        """)
    assert result.state == "succeeded", result.error
    attempts = Project(home).store.attempts(result.run_id, "a")
    assert [a["exit_reason"] for a in attempts][:1] == ["crashed"] and len(attempts) == 2
    assert "the Ray worker died: WorkerCrashedError" in attempts[0]["error"]


def test_stop_kills_a_hung_task_and_its_children_and_reports_at_once(steps, tmp_path):
    from fanflow.executors.ray import RayExecutor

    pid_file = tmp_path / "pids"
    spec = TaskSpec(run_id="r", task="stuck", step="stuck", attempt=1, uses="raysteps:hang",
                    inputs={"pid_file": str(pid_file)}, artifacts=str(tmp_path / "artifacts"),
                    import_paths=[str(steps)])
    executor = RayExecutor()
    executor.submit(spec)
    assert _wait_until(lambda: pid_file.exists() and pid_file.read_text()), "the task never started"
    worker, child = map(int, pid_file.read_text().split())
    assert executor.wait(0.2) == []
    executor.stop("stuck", "timeout", "timed out after 1s")
    [result] = executor.wait(0)
    assert (result.task, result.attempt, result.status, result.error) == ("stuck", 1, "timeout", "timed out after 1s")
    assert _wait_until(lambda: _gone(worker) and _gone(child))
    assert executor.wait(0.5) == []  # nothing more comes from the stopped task
    executor.close()
    assert ray.is_initialized()  # it found Ray running: it leaves it running


def _occupy(seconds: float) -> None:
    time.sleep(seconds)


def test_a_service_ray_cannot_place_is_still_reported_once_stopped(steps, tmp_path, monkeypatch):
    from fanflow.executors import ray as ray_executor

    monkeypatch.setattr(ray_executor, "SERVICE_STOP_GRACE", 0.5)
    blocker = ray.remote(num_cpus=2)(_occupy).remote(60)  # the node's cores are taken for now
    spec = TaskSpec(run_id="r", task="serve", step="serve", attempt=1, uses="raysteps:hang", kind="service",
                    inputs={"pid_file": str(tmp_path / "pids")}, artifacts=str(tmp_path / "artifacts"),
                    cpus=2, import_paths=[str(steps)])
    executor = ray_executor.RayExecutor()
    try:
        executor.submit(spec)
        assert executor.wait(0.5) == []
        executor.stop("serve", "timeout", "not ready after 1s")
        results, deadline = [], time.time() + 20
        while not results and time.time() < deadline:
            results = executor.wait(0.5)
        assert [(r.task, r.status, r.error) for r in results] == [("serve", "timeout", "not ready after 1s")]
    finally:
        executor.close()
        ray.cancel(blocker, force=True)


def test_a_task_bigger_than_every_node_is_refused_at_once_naming_the_task_and_the_node(steps, tmp_path):
    from fanflow.executors.ray import RayExecutor

    spec = TaskSpec(run_id="r", task="huge[x=1]", step="huge", attempt=1, uses="raysteps:version", inputs={"x": 1},
                    artifacts=str(tmp_path / "artifacts"), cpus=64, import_paths=[str(steps)])
    executor = RayExecutor()
    executor.submit(spec)
    [result] = executor.wait(0)
    executor.close()
    assert (result.task, result.status, result.retryable) == ("huge[x=1]", "failed", False)
    assert re.fullmatch(r"huge\[x=1\] asks for 64 cpus, more than any node of the Ray cluster has: the largest, "
                        r"node \w+ at [\d.]+, has 2 cpus", result.error), result.error


TINY = """
name: tiny
params: {n: 300, crash_on: -1, fail_on: -1, marker: ""}
steps:
  numbers: {uses: raysteps:numbers, with: {n: "${params.n}"}}
  tiny:
    uses: raysteps:tiny
    fan_out: {x: "${numbers}"}
    with: {x: "${item.x}", crash_on: "${params.crash_on}", fail_on: "${params.fail_on}", marker: "${params.marker}"}
  total: {uses: raysteps:numbers, with: {n: 1}, needs: [tiny]}
"""


def _tiny(home, folder, **params):
    project = Project(home)
    try:
        runner = project.runner(load_workflow(write(folder, "tiny.yaml", TINY)), params=params, executor="ray",
                                cache=False)
        return runner, runner.run()
    finally:
        project.close()


def test_tiny_tasks_go_out_in_batches_and_every_output_comes_back_in_order(steps, home, monkeypatch):
    from fanflow.executors import ray as ray_executor

    sizes = []
    send = ray_executor.RayExecutor._send
    monkeypatch.setattr(ray_executor.RayExecutor, "_send", lambda self, specs: sizes.append(len(specs)) or send(self, specs))
    runner, result = _tiny(home, steps)
    assert result.state == "succeeded", result.error
    assert "tiny" in runner.light.steps and max(sizes) > 1
    assert [t.output for t in result.tasks.values() if t.step == "tiny"] == list(range(300))


def test_a_crash_in_a_batch_runs_its_tasks_again_one_by_one(steps, home, tmp_path):
    _, result = _tiny(home, steps, crash_on=200, marker=str(tmp_path / "crashed"))
    assert result.state == "succeeded", result.error
    assert (tmp_path / "crashed").exists()
    tiny = [t for t in result.tasks.values() if t.step == "tiny"]
    assert [t.output for t in tiny] == list(range(300)) and {t.attempt for t in tiny} == {1}


def test_fail_fast_among_tiny_tasks_stops_the_rest(steps, home):
    _, result = _tiny(home, steps, fail_on=250)
    assert result.state == "failed" and result.error == "tiny[x=250]: ValueError: tiny 250 failed"
    assert {t.state for t in result.tasks.values() if t.step == "tiny"} <= {
        State.SUCCEEDED, State.FAILED, State.CANCELLED}
    assert result.tasks["total"].state in (State.CANCELLED, State.SKIPPED)
    assert not [r for r in Project(home).store.tasks(result.run_id) if r["state"] in ("running", "pending")]


def test_stopping_one_task_of_a_batch_kills_it_and_runs_the_others_again(steps, tmp_path):
    from fanflow.executors.ray import RayExecutor

    pid_file = tmp_path / "pids"

    def spec(task, uses, inputs):
        return TaskSpec(run_id="r", task=task, step="s", attempt=1, uses=uses, inputs=inputs, light=True,
                        artifacts=str(tmp_path / "artifacts"), import_paths=[str(steps)])

    executor = RayExecutor()
    executor.submit(spec("stuck", "raysteps:hang", {"pid_file": str(pid_file)}))
    executor.submit(spec("a", "raysteps:tiny", {"x": 1}))
    executor.submit(spec("b", "raysteps:tiny", {"x": 2}))
    executor.flush()
    assert len(executor._batches) == 1  # the three in one Ray task, the hung one first
    assert _wait_until(lambda: pid_file.exists() and pid_file.read_text()), "the task never started"
    worker, child = map(int, pid_file.read_text().split())
    executor.stop("stuck", "cancelled", "stopped")
    results = executor.wait(0)
    deadline = time.time() + 30
    while len(results) < 3 and time.time() < deadline:
        results += executor.wait(0.5)
    assert sorted((r.task, r.status, r.output) for r in results) == [
        ("a", "succeeded", 1), ("b", "succeeded", 2), ("stuck", "cancelled", None)]
    assert _wait_until(lambda: _gone(worker) and _gone(child))
    executor.close()


def test_task_output_goes_to_its_log_files_and_the_worker_gets_its_own_back(steps, home):
    result = run(home, steps, """
        name: talk
        steps:
          say: {uses: raysteps:talk, fan_out: {text: [a, b, c, d]}, with: {text: "${item.text}"}}
        """)
    assert result.state == "succeeded", result.error
    logs = cli("logs", result.run_id, "say[text=c]", "--home", home, check=True).stdout
    assert "out: c" in logs and "child: c" in logs and "err: c" in logs
    assert "out: a" not in logs

    @ray.remote
    def descriptors():
        return os.readlink("/proc/self/fd/1"), os.readlink("/proc/self/fd/2")

    for out, err in ray.get([descriptors.remote() for _ in range(8)]):
        assert "/logs/worker-" in out and out.endswith(".out") and err.endswith(".err"), (out, err)


def test_a_changed_step_module_is_imported_again_by_workers_that_ran_the_old_one(steps, home):
    text = """
        name: versions
        steps:
          v: {uses: raysteps:version, fan_out: {x: [1, 2, 3, 4, 5, 6]}, with: {x: "${item.x}"}}
        """
    first = run(home, steps, text, cache=False)
    assert {o["v"] for o in first.outputs("v")} == {1} and len({o["pid"] for o in first.outputs("v")}) == 2
    write(steps, "raysteps.py", STEPS.replace('"v": 1', '"v": 2'))
    second = run(home, steps, text, cache=False)
    assert {o["v"] for o in second.outputs("v")} == {2}


def test_a_local_ray_instance_is_started_for_the_run_and_shut_down_after_it(tmp_path):
    script = """
import json, time, psutil, ray
from fanflow.executors.ray import RayExecutor

executor = RayExecutor()
capacity = executor.capacity()
started = ray.is_initialized()
children = len(psutil.Process().children(recursive=True))
executor.close()
deadline = time.time() + 10
while psutil.Process().children(recursive=True) and time.time() < deadline:
    time.sleep(0.1)
print(json.dumps({"started": started, "capacity": capacity, "children": children,
                  "after": ray.is_initialized(), "left": len(psutil.Process().children(recursive=True))}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["started"] and report["capacity"]["cpus"] == os.cpu_count() and report["children"] > 0
    assert not report["after"] and report["left"] == 0


def test_fanflow_run_with_the_ray_executor_from_the_command_line(home):
    result = cli("run", ROOT / "examples/fanout_sum/workflow.yaml", "-p", "delay=0", "--executor", "ray",
                 "--home", home, "--json", check=True, timeout=180)
    assert json.loads(result.stdout)["results"]["total"] == {"sum": 204, "count": 8}


def test_an_executor_given_an_address_connects_and_only_disconnects(steps, tmp_path):
    address = ray.get_runtime_context().gcs_address
    script = f"""
import ray
from fanflow.executors.ray import RayExecutor
from fanflow.vocab.states import State
from fanflow.executors.base import TaskSpec

executor = RayExecutor(address={address!r})
spec = TaskSpec(run_id="r", task="t", step="t", attempt=1, uses="raysteps:version", inputs={{"x": 1}},
                artifacts={str(tmp_path / "artifacts")!r}, import_paths=[{str(steps)!r}])
executor.submit(spec)
results = []
while not results:
    results = executor.wait(1)
executor.close()
print(results[0].status, results[0].output["v"], ray.is_initialized())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["succeeded", "1", "False"]
    assert ray.cluster_resources()["CPU"] == 2  # the cluster it connected to is still up
