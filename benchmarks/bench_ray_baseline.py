"""Plain Ray beside fanflow on Ray, on one local Ray instance started once (so no figure
includes Ray's start-up), with the local executor's figures next to them.

    python benchmarks/bench_ray_baseline.py                 # N = 100, 1,000, 10,000
    python benchmarks/bench_ray_baseline.py --sizes 10000 --repeat 3 --json

Plain Ray runs the same no-op fan-out and sum twice: all at once (``f.remote()`` per item,
then ``ray.get``), and with at most one task per core in flight, the most the engine ever
hands out at a time (it admits tasks within the executor's capacity)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil
import ray

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_engine  # noqa: E402


@ray.remote
def noop(x: int) -> int:
    return x


def plain_ray(n: int) -> dict:
    started = time.perf_counter()
    total = sum(ray.get([noop.remote(i) for i in range(n)]))
    wall = time.perf_counter() - started
    assert total == n * (n - 1) // 2
    return {"n": n, "wall_s": round(wall, 3), "tasks_per_s": round(n / wall)}


def plain_ray_bounded(n: int, in_flight: int) -> dict:
    started = time.perf_counter()
    pending = [noop.remote(i) for i in range(min(n, in_flight))]
    submitted, total = len(pending), 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        if pending:
            more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
            ready += more
        total += sum(ray.get(ready))
        for _ in ready:
            if submitted < n:
                pending.append(noop.remote(submitted))
                submitted += 1
    wall = time.perf_counter() - started
    assert total == n * (n - 1) // 2
    return {"n": n, "in_flight": in_flight, "wall_s": round(wall, 3), "tasks_per_s": round(n / wall)}


def best(measure, repeat: int) -> dict:
    return min((measure() for _ in range(repeat)), key=lambda row: row["wall_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs of each figure")
    parser.add_argument("--no-efficiency", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    cores = psutil.cpu_count()
    figures: dict = {"cores": cores, "ray_version": ray.__version__, "sizes": sizes}
    with tempfile.TemporaryDirectory(prefix="fanflow-bench-") as folder:
        home = Path(folder) / ".fanflow"
        ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
        try:
            ray.get([noop.remote(i) for i in range(4 * cores)])  # start the workers
            figures["ray"] = [best(lambda n=n: plain_ray(n), args.repeat) for n in sizes]
            figures["ray_bounded"] = [best(lambda n=n: plain_ray_bounded(n, cores), args.repeat) for n in sizes]
            figures["fanflow_ray"] = [
                best(lambda n=n: bench_engine.overhead(n, "ray", home), args.repeat) for n in sizes
            ]
            if not args.no_efficiency:
                figures["efficiency_ray"] = bench_engine.efficiency("ray", home)
        finally:
            ray.shutdown()
        figures["fanflow_local"] = [
            best(lambda n=n: bench_engine.overhead(n, "local", home), args.repeat) for n in sizes
        ]
        if not args.no_efficiency:
            figures["efficiency_local"] = bench_engine.efficiency("local", home)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"no-op fan-out + sum · Ray {ray.__version__} · {cores} cores · tasks/s (wall s)")
    print(f"  {'N':>6}  {'Ray, all at once':>18}  {f'Ray, {cores} in flight':>18}  {'fanflow on Ray':>18}"
          f"  {'fanflow local':>18}  {'fanflow-on-Ray / Ray':>20}")
    rows = zip(figures["ray"], figures["ray_bounded"], figures["fanflow_ray"], figures["fanflow_local"], strict=True)
    for plain, bounded, on_ray, local in rows:
        cells = [f"{r['tasks_per_s']:>7} ({r['wall_s']:7.3f})" for r in (plain, bounded, on_ray, local)]
        ratio = on_ray["tasks_per_s"] / plain["tasks_per_s"]
        print(f"  {plain['n']:>6}  " + "  ".join(f"{c:>18}" for c in cells) + f"  {ratio:>20.2f}")
    for name in ("ray", "local"):
        e = figures.get(f"efficiency_{name}")
        if e:
            print(f"  efficiency on {name:>5}: {e['branches']} x ~2 s CPU tasks on {e['cores']} cores: makespan "
                  f"{e['makespan_s']} s, lower bound {e['lower_bound_s']} s, ratio {e['ratio']}")


if __name__ == "__main__":
    main()
