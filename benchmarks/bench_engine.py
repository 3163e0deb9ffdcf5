"""Engine benchmarks, the engine alone: scheduling overhead, parallel efficiency, shared-memory
fan-out, and the time of a fully cached re-run. The runs are made in this process through the
Python API (no command-line start-up, no live view), so these are the engine-only figures;
``bench_cli.py`` measures what users run. Prints a table; ``--json`` prints the figures as JSON.

    python benchmarks/bench_engine.py                    # everything, local executor
    python benchmarks/bench_engine.py --only overhead --executor ray
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from fanflow.project import Project  # noqa: E402
from fanflow.spec.loader import workflow_from_dict  # noqa: E402

SOURCE = str(HERE / "noop_steps.py")  # steps are imported from this folder


def _workflow(name: str, steps: dict):
    return workflow_from_dict({"name": name, "steps": steps}, source=SOURCE)


def overhead(n: int, executor: str, home: Path) -> dict:
    """One step, a fan-out of n no-op tasks, a fan-in that sums them: all recorded."""
    spec = _workflow(
        "overhead",
        {
            "make": {"uses": "noop_steps:make", "with": {"n": n}},
            "noop": {"uses": "noop_steps:noop", "fan_out": {"x": "${make}"}, "with": {"x": "${item.x}"}},
            "add": {"uses": "noop_steps:add", "with": {"values": "${noop[*]}"}},
        },
    )
    project = Project(home)
    writes = _time_writes(project.store)
    runner = project.runner(spec, executor=executor, cache=False)
    started = time.perf_counter()
    result = runner.run()
    wall = time.perf_counter() - started
    assert result.state == "succeeded", result.error
    assert result.outputs("add") == [n * (n - 1) // 2]
    recorded = project.store.tasks(result.run_id)
    assert len(recorded) == n + 2 and all(t["state"] == "succeeded" for t in recorded)
    project.close()
    return {"n": n, "tasks": n + 2, "wall_s": round(wall, 3), "tasks_per_s": round((n + 2) / wall),
            "store_write_s": round(writes["seconds"], 3), "store_rows": writes["rows"]}


def _time_writes(store) -> dict:
    """Time the run store's writes (each a transaction of ``executemany`` batches) from now on:
    what recording the run costs the engine, apart from the rest of its work."""
    figures = {"seconds": 0.0, "rows": 0}
    write = store._write

    def timed(batches, raw=None):
        batches = list(batches)
        figures["rows"] += sum(len(rows) for _, rows in batches)
        started = time.perf_counter()
        try:
            return write(batches, raw)
        finally:
            figures["seconds"] += time.perf_counter() - started

    store._write = timed
    return figures


def efficiency(executor: str, home: Path, seconds: float = 2.0, branches: int = 4) -> dict:
    """Fan out CPU-bound tasks of about ``seconds`` each over the machine's cores."""
    cores = psutil.cpu_count(logical=True)
    spec = _workflow(
        "efficiency",
        {
            "burn": {
                "uses": "noop_steps:burn_timed",
                "fan_out": {"x": list(range(branches))},
                "with": {"seconds": seconds, "x": "${item.x}"},
            },
            "join": {"uses": "noop_steps:add_durations", "with": {"runs": "${burn[*]}"}},
        },
    )
    project = Project(home)
    runner = project.runner(spec, executor=executor, cache=False)
    started = time.perf_counter()
    result = runner.run()
    makespan = time.perf_counter() - started
    assert result.state == "succeeded", result.error
    durations = [r["wall"] for r in result.outputs("burn")]
    lower_bound = max(max(durations), sum(durations) / cores)
    project.close()
    return {
        "branches": branches,
        "cores": cores,
        "task_s": [round(d, 3) for d in durations],
        "makespan_s": round(makespan, 3),
        "lower_bound_s": round(lower_bound, 3),
        "ratio": round(makespan / lower_bound, 3),
    }


def memory(executor: str, home: Path, mb: int = 500, branches: int = 4) -> dict:
    """A fan-out whose branches all read one large array made upstream: peak memory of the
    whole process tree (proportional set size, so shared pages count once)."""
    spec = _workflow(
        "memory",
        {
            "make": {"uses": "noop_steps:big", "with": {"mb": mb}},
            "read": {
                "uses": "noop_steps:touch_all",
                "fan_out": {"i": list(range(branches))},
                "with": {"data": "${make}", "i": "${item.i}"},
            },
        },
    )
    project = Project(home)
    runner = project.runner(spec, executor=executor, cache=False)
    sampler = TreeSampler()
    sampler.start()
    result = runner.run()
    sampler.stop()
    assert result.state == "succeeded", result.error
    sums = {r["sum"] for r in result.outputs("read")}
    assert len(sums) == 1
    project.close()
    array = mb * 2**20
    return {
        "array_mb": mb,
        "branches": branches,
        "peak_tree_mb": round(sampler.peak / 2**20),
        "baseline_mb": round(sampler.baseline / 2**20),
        "peak_over_array": round(sampler.peak / array, 2),
        "peak_above_baseline_over_array": round((sampler.peak - sampler.baseline) / array, 2),
    }


class TreeSampler(threading.Thread):
    def __init__(self, every: float = 0.05):
        super().__init__(daemon=True)
        self.every, self.peak, self._halt = every, 0, threading.Event()
        self.root = psutil.Process()
        self.baseline = self._pss()

    def _pss(self) -> int:
        total = 0
        for proc in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += proc.memory_full_info().pss
        return total

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, self._pss())
            time.sleep(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def cached_rerun(home: Path) -> dict:
    """The example workflow run twice from the command line; the second is all cache hits."""
    example = ROOT / "examples" / "fanout_sum" / "workflow.yaml"
    command = [sys.executable, "-m", "fanflow.cli.main", "run", str(example), "--home", str(home), "--json"]
    subprocess.run(command, check=True, capture_output=True)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        timings.append(time.perf_counter() - started)
        report = json.loads(out.stdout)
        assert report["cached"] == sum(report["tasks"].values()), report
    bare = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - started)
    second = min(timings)
    return {
        "second_run_s": round(second, 3),
        "interpreter_start_s": round(min(bare), 3),
        "beyond_interpreter_s": round(second - min(bare), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--executor", default="local", choices=["local", "ray"])
    parser.add_argument("--only", choices=["overhead", "efficiency", "memory", "cache"], action="append")
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--memory-mb", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    wanted = set(args.only or ["overhead", "efficiency", "memory", "cache"])
    figures: dict = {"executor": args.executor, "cores": psutil.cpu_count()}
    if args.executor == "ray":
        import ray

        # One Ray instance for every measurement (the executor uses a connection it finds),
        # so Ray's own start-up is not counted in each run.
        ray.init(num_cpus=psutil.cpu_count(), include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="fanflow-bench-") as folder:
        home = Path(folder) / ".fanflow"
        if "overhead" in wanted:
            figures["overhead"] = [overhead(int(n), args.executor, home) for n in args.sizes.split(",")]
        if "efficiency" in wanted:
            figures["efficiency"] = efficiency(args.executor, home)
        if "memory" in wanted:
            figures["memory"] = memory(args.executor, home, args.memory_mb)
        if "cache" in wanted and args.executor == "local":
            figures["cache"] = cached_rerun(Path(folder) / "cache-home")
        shutil.rmtree(home, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"fanflow engine benchmarks, the engine alone (in-process: no CLI start-up, no live view) · "
          f"executor {args.executor} · {figures['cores']} cores")
    for row in figures.get("overhead", []):
        print(
            f"  overhead   N={row['n']:>6}: {row['wall_s']:7.3f} s  {row['tasks_per_s']:>7} tasks/s"
            f"   (target at N=10,000: >= 5,000 tasks/s); the store's writes {row['store_write_s']:.3f} s "
            f"({row['store_write_s'] / row['wall_s']:.0%}), {row['store_rows']} rows"
        )
    if "efficiency" in figures:
        e = figures["efficiency"]
        print(
            f"  efficiency {e['branches']} x ~2 s CPU tasks on {e['cores']} cores: makespan {e['makespan_s']} s, "
            f"lower bound {e['lower_bound_s']} s, ratio {e['ratio']} (target <= 1.10)"
        )
    if "memory" in figures:
        m = figures["memory"]
        print(
            f"  memory     {m['branches']} branches reading one {m['array_mb']} MB array: peak tree PSS "
            f"{m['peak_tree_mb']} MB = {m['peak_over_array']} x the array (target < 2.0; baseline "
            f"{m['baseline_mb']} MB)"
        )
    if "cache" in figures:
        c = figures["cache"]
        print(
            f"  cache      second run of the example: {c['second_run_s']} s, "
            f"{c['beyond_interpreter_s']} s beyond interpreter start (target < 1 s)"
        )


if __name__ == "__main__":
    main()
