"""fanflow as users run it, beside its peers, in one run: the ``fanflow run`` command on a YAML
workflow with default settings (the live view on, in a pseudo-terminal; the cache on; the
durable SQLite run store), each figure from process start to the result printed.

    python benchmarks/bench_cli.py                       # W1 at N = 1,000, 10,000, 100,000; W2
    python benchmarks/bench_cli.py --sizes 10000 --peer-max 10000 --json

W1: a fan-out of N no-op tasks and a fan-in that sums them; first, a run with nothing to fan
out (N = 0), which is what every run costs before its first task and after its last. W2: 4
CPU-bound tasks of about 2 s on the machine's cores (2 here). Beside fanflow, the same work with
multiprocessing.Pool recording nothing (the floor), and with Ray and Dask when installed
(``pip install -e '.[ray,bench]'``), each as a program of its own, started the same way; the
ratios are fanflow's throughput over each one's. Also printed: the engine's peak resident
memory and the run store's size, per task (beyond a run of the smallest size).
The machine is shared: every figure is printed with the load averages around it. fanflow's
modules are compiled to bytecode first, as installing it does.
docs/engine.md holds the figures measured with it, and where the engine's time goes.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import fcntl
import importlib.util
import json
import os
import pty
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import termios
import textwrap
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORES = os.cpu_count() or 1

W1 = """
name: w1
params: {n: {type: int, default: 1000}}
steps:
  make: {uses: noop_steps:make, with: {n: "${params.n}"}}
  noop: {uses: noop_steps:noop, fan_out: {x: "${make}"}, with: {x: "${item.x}"}}
  add: {uses: noop_steps:add, with: {values: "${noop[*]}"}}
"""

W2 = """
name: w2
params: {seconds: {type: float, default: 2.0}}
steps:
  burn:
    uses: noop_steps:burn_timed
    fan_out: {x: [0, 1, 2, 3]}
    with: {seconds: "${params.seconds}", x: "${item.x}"}
"""

# The peers, each a program of its own that prints the sum (W1) or the tasks' own wall times (W2).
POOL_W1 = """
import multiprocessing, sys
from noop_steps import noop
if __name__ == "__main__":
    n = int(sys.argv[1])
    with multiprocessing.Pool({cores}) as pool:
        print("sum", sum(pool.map(noop, range(n))))
"""

POOL_W2 = """
import json, multiprocessing, sys, time
from noop_steps import burn_timed
if __name__ == "__main__":
    with multiprocessing.Pool({cores}) as pool:
        started = time.time()
        runs = pool.starmap(burn_timed, [(float(sys.argv[1]), x) for x in range(4)])
        print("walls", json.dumps({{"walls": [r["wall"] for r in runs], "makespan": time.time() - started}}))
"""

RAY_W1 = """
import sys
import ray
from noop_steps import noop
ray.init(num_cpus={cores}, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
task = ray.remote(noop)
n = int(sys.argv[1])
print("sum", sum(ray.get([task.remote(i) for i in range(n)])))
"""

DASK_W1 = """
import sys
import dask
from noop_steps import noop
if __name__ == "__main__":
    n = int(sys.argv[1])
    parts = [dask.delayed(noop)(i) for i in range(n)]
    print("sum", dask.delayed(sum)(parts).compute(scheduler="{scheduler}", num_workers={cores}))
"""


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def in_terminal(command: list[str], cwd: Path, env: dict[str, str], size=(24, 80)) -> tuple[float, str, Sampler]:
    """Run ``command`` with a pseudo-terminal of ``size`` (rows, columns) as its stdin, stdout
    and stderr, as a user at a terminal would. Returns the wall time, what it printed, and
    what was sampled of the process itself (peak memory, processor time)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                               start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        with contextlib.suppress(OSError):
            while data := os.read(master, 65536):
                chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    peak = Sampler(process.pid)
    peak.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    peak.stop()
    peak.cpu_all = usage.ru_utime + usage.ru_stime
    reader.join(5)
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{text[-3000:]}")
    return wall, text, peak


class Sampler(threading.Thread):
    """One process's own peak resident set (Linux's high-water mark) and processor time (not
    its children's), read while it lives; ``cpu_all`` adds its children's, once it has ended."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.bytes = 0
        self.cpu = 0.0
        self.cpu_all = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._halt.wait(0.02):
            with contextlib.suppress(OSError, IndexError):
                match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{self.pid}/status").read_text())
                if match:
                    self.bytes = max(self.bytes, int(match.group(1)) * 1024)
                fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
                self.cpu = (int(fields[11]) + int(fields[12])) / tick

    def stop(self) -> None:
        self._halt.set()
        self.join()


def program(folder: Path, text: str, *args: str, timeout: float = 1800) -> tuple[float, str]:
    """Run a peer's program from process start to exit: wall time and what it printed."""
    script = folder / "peer.py"
    script.write_text(textwrap.dedent(text), encoding="utf-8")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), *args], cwd=folder, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(folder)})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} failed:\n{done.stderr[-3000:]}")
    return wall, done.stdout


def fanflow_w1(folder: Path, n: int) -> dict:
    home = folder / f"home-{n}"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "COLUMNS": "80", "LINES": "24", "TERM": os.environ.get("TERM", "xterm-256color")}
    wall, text, sampled = in_terminal([sys.executable, "-m", "fanflow.cli.main", "run", "w1.yaml", "-p",
                                       f"n={n}", "--home", str(home)], folder, env)
    expected = n * (n - 1) // 2
    assert f"add = {expected}" in text, text[-2000:]
    db = home / "runs.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        recorded = conn.execute("select count(*) from tasks where state = 'succeeded'").fetchone()[0]
    assert recorded == n + 2, f"{recorded} tasks recorded as succeeded, expected {n + 2}"
    size = db.stat().st_size + sum(p.stat().st_size for p in home.glob("runs.db-*"))
    return {"n": n, "tasks": n + 2, "wall_s": round(wall, 3), "tasks_per_s": round((n + 2) / wall),
            "engine_peak_rss": sampled.bytes, "runs_db_bytes": size, "engine_cpu_s": round(sampled.cpu, 3),
            "workers_cpu_s": round(sampled.cpu_all - sampled.cpu, 3)}


def fanflow_w2(folder: Path, seconds: float) -> dict:
    home = folder / "home-w2"
    shutil.rmtree(home, ignore_errors=True)
    wall, _, _ = in_terminal([sys.executable, "-m", "fanflow.cli.main", "run", "w2.yaml", "-p",
                              f"seconds={seconds}", "--home", str(home)], folder, dict(os.environ))
    with contextlib.closing(sqlite3.connect(home / "runs.db")) as conn:
        started, ended = conn.execute("select min(started), max(ended) from tasks").fetchone()
        outputs = [json.loads(o) for (o,) in conn.execute("select output from tasks where step = 'burn'")]
    walls = [o["wall"] for o in outputs]
    makespan = ended - started
    bound = max(max(walls), sum(walls) / CORES)
    return {"wall_s": round(wall, 3), "makespan_s": round(makespan, 3), "task_walls_s": [round(w, 3) for w in walls],
            "lower_bound_s": round(bound, 3), "ratio": round(makespan / bound, 4)}


def pool_w2(folder: Path, seconds: float) -> dict:
    wall, out = program(folder, POOL_W2.format(cores=CORES), str(seconds))
    figures = json.loads(out.split("walls", 1)[1])
    bound = max(max(figures["walls"]), sum(figures["walls"]) / CORES)
    return {"wall_s": round(wall, 3), "makespan_s": round(figures["makespan"], 3),
            "lower_bound_s": round(bound, 3), "ratio": round(figures["makespan"] / bound, 4)}


def peer_w1(folder: Path, name: str, text: str, n: int) -> dict:
    wall, out = program(folder, text, str(n))
    assert f"sum {n * (n - 1) // 2}" in out, out
    return {"name": name, "n": n, "wall_s": round(wall, 3), "tasks_per_s": round(n / wall)}


def peers() -> dict[str, str]:
    found = {"multiprocessing.Pool (no recording)": POOL_W1.format(cores=CORES)}
    if _installed("ray"):
        found["Ray"] = RAY_W1.format(cores=CORES)
    if _installed("dask"):
        found["Dask (threads)"] = DASK_W1.format(scheduler="threads", cores=CORES)
        found["Dask (processes)"] = DASK_W1.format(scheduler="processes", cores=CORES)
    return found


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def compile_fanflow() -> None:
    """Compile fanflow's modules to bytecode first, as installing it does: where Python may not
    write bytecode (``PYTHONDONTWRITEBYTECODE``), every run would otherwise compile them
    again, which no installed copy does."""
    package = Path(importlib.util.find_spec("fanflow").origin).parent
    compileall.compile_dir(package, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="W1's fan-out widths")
    parser.add_argument("--peer-max", type=int, default=100000, help="run the peers up to this N only")
    parser.add_argument("--seconds", type=float, default=2.0, help="W2: CPU seconds of each task")
    parser.add_argument("--no-w2", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    compile_fanflow()
    figures: dict = {"cores": CORES, "load_before": os.getloadavg(), "w1": [], "peers": []}
    with tempfile.TemporaryDirectory(prefix="fanflow-bench-cli-") as tmp:
        folder = Path(tmp)
        shutil.copy(HERE / "noop_steps.py", folder / "noop_steps.py")
        (folder / "w1.yaml").write_text(W1, encoding="utf-8")
        (folder / "w2.yaml").write_text(W2, encoding="utf-8")
        # What every run costs before its first task and after its last: a run with nothing to
        # fan out (make and add only), beside Pool starting and stopping with nothing to map;
        # the faster of two runs (the first also fills the operating system's file caches).
        figures["empty"] = min((fanflow_w1(folder, 0) for _ in range(2)), key=lambda row: row["wall_s"])
        figures["empty_pool"] = program(folder, POOL_W1.format(cores=CORES), "0")[0]
        _progress(args, f"fanflow W1 N=0 (a run's fixed cost): {figures['empty']['wall_s']} s; "
                        f"Pool N=0: {figures['empty_pool']:.3f} s")
        for n in sizes:
            row = fanflow_w1(folder, n)
            row["load"] = load()
            figures["w1"].append(row)
            _progress(args, f"fanflow W1 N={n}: {row['wall_s']} s, {row['tasks_per_s']} tasks/s ({row['load']})")
            if 0 < n <= args.peer_max:
                for name, text in peers().items():
                    peer = peer_w1(folder, name, text, n)
                    peer["load"] = load()
                    figures["peers"].append(peer)
                    _progress(args, f"  {name} N={n}: {peer['wall_s']} s ({peer['load']})")
        if not args.no_w2:
            figures["w2"] = fanflow_w2(folder, args.seconds)
            figures["w2"]["load"] = load()
            figures["w2_pool"] = pool_w2(folder, args.seconds)
    figures["load_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    report(figures)


def _progress(args, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr, flush=True)


def report(figures: dict) -> None:
    print(f"\nfanflow through the CLI, side by side · {figures['cores']} cores · "
          "load {:.2f} {:.2f} {:.2f} before, {:.2f} {:.2f} {:.2f} after".format(
              *figures["load_before"], *figures["load_after"]))
    print("W1: fan-out of N no-op tasks + a fan-in sum, process start to result printed")
    print(f"  {'N':>7}  {'fanflow tasks/s':>16}  {'wall s':>7}  {'engine CPU s':>12}  {'workers CPU s':>13}")
    for row in figures["w1"]:
        print(f"  {row['n']:>7}  {row['tasks_per_s']:>16}  {row['wall_s']:>7}  {row['engine_cpu_s']:>12}"
              f"  {row['workers_cpu_s']:>13}")
        for p in (p for p in figures["peers"] if p["n"] == row["n"]):
            print(f"           fanflow / {p['name']}: {row['tasks_per_s'] / p['tasks_per_s']:.2f}x "
                  f"({p['tasks_per_s']} tasks/s, {p['wall_s']} s)")
    by_n = {row["n"]: row for row in figures["w1"]}
    if len(by_n) > 1:
        small, large = by_n[min(by_n)], by_n[max(by_n)]
        extra = large["tasks"] - small["tasks"]
        print(f"  engine peak RSS at N={large['n']}: {large['engine_peak_rss'] / 2**20:.1f} MiB, "
              f"{(large['engine_peak_rss'] - small['engine_peak_rss']) / extra:.0f} bytes per task beyond "
              f"N={small['n']} (target < 1024)")
        print(f"  runs.db at N={large['n']}: {large['runs_db_bytes'] / 2**20:.1f} MiB, "
              f"{large['runs_db_bytes'] / large['tasks']:.0f} bytes per task")
        if 10000 in by_n and large["n"] > 10000:
            print(f"  N={large['n']} rate / N=10,000 rate: "
                  f"{large['tasks_per_s'] / by_n[10000]['tasks_per_s']:.2f} (target >= 0.9)")
    pool = next((p for p in figures["peers"] if p["n"] == 10000 and p["name"].startswith("multi")), None)
    if 10000 in by_n:
        target = f"; {by_n[10000]['tasks_per_s'] / pool['tasks_per_s']:.2f}x the Pool floor (target >= 0.25)" if pool else ""
        print(f"  N=10,000: {by_n[10000]['tasks_per_s']} tasks/s (target >= 10,000 on a quiet machine){target}")
    if "empty" in figures:
        empty = figures["empty"]
        print(f"  a run with nothing to fan out (make and add only): {empty['wall_s']} s, engine CPU "
              f"{empty['engine_cpu_s']} s, workers CPU {empty['workers_cpu_s']} s; multiprocessing.Pool "
              f"starting and stopping with nothing to map: {figures['empty_pool']:.3f} s")
        for row in figures["w1"]:
            if row["n"] >= 1000:
                marginal = (row["wall_s"] - empty["wall_s"]) / row["n"]
                print(f"  N={row['n']} beyond that fixed cost: {marginal * 1e6:.0f} us per task, "
                      f"{1 / marginal:.0f} tasks/s")
        if pool:
            print(f"  0.25x the Pool floor at N=10,000 means the whole run within {4 * pool['wall_s']:.3f} s "
                  f"(4 x {pool['wall_s']} s): {empty['wall_s'] / (4 * pool['wall_s']):.2f}x of that "
                  "is spent by a run with no fan-out tasks")
    if "w2" in figures:
        w2, pool = figures["w2"], figures["w2_pool"]
        print(f"W2: 4 CPU-bound tasks on {figures['cores']} cores: fanflow makespan {w2['makespan_s']} s "
              f"(first task started to last task ended, from the run store; {w2['wall_s']} s end to end), "
              f"lower bound {w2['lower_bound_s']} s, ratio {w2['ratio']} (target <= 1.03); "
              f"multiprocessing.Pool ratio {pool['ratio']}")


if __name__ == "__main__":
    main()
