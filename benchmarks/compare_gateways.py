"""The gateway's own cost, this tree's code against another commit's, side by side in one run.

Both gateways serve the same stand-in members (answering with what two real members answered,
recorded once, at once or after ``--delay`` seconds waited on a timer, using no CPU), and the
load generator asks each in turn, at 1 client: CPU time per request and p50 of each. The
pair of gateways is started afresh ``--pairs`` times and the medians over pairs are printed:
one process instance can differ from the next by a fifth in CPU per request on this machine,
so a single pair decides nothing.

    python benchmarks/compare_gateways.py --base HEAD~1                  # binary, 3 ms members
    python benchmarks/compare_gateways.py --base main --encoding json --delay 0 --pairs 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from bench_serving import body_for, cpu_seconds  # noqa: E402
from serving_load import recorded_answer, run_load, start_member, start_stand_in  # noqa: E402

PATH = "/v2/models/ensemble/infer"


def start_gateway(tree: Path, members: list[dict]) -> tuple[subprocess.Popen, str]:
    """A gateway process running the code in ``tree``; its URL."""
    args = [sys.executable, "-m", "fanflow.serving.gateway", "--strategy", "union", "--port", "0"]
    for member in members:
        args += ["--member", f"{member['model']}={member['url']}"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
    for line in process.stdout:  # its announcement, then its URL alone on a line
        if line.startswith("http"):
            return process, line.strip()
    process.kill()
    raise RuntimeError(f"the gateway from {tree} did not start")


def one_pair(trees: dict[str, Path], members: list[dict], body, rounds: int, seconds: float) -> dict:
    """CPU per request and p50 of a fresh gateway from each tree, asked in turns."""
    gateways = {name: start_gateway(tree, members) for name, tree in trees.items()}
    figures = {name: {"cpu": 0.0, "answered": 0, "latencies": []} for name in trees}
    try:
        for turn in range(rounds):
            order = list(gateways) if turn % 2 == 0 else list(gateways)[::-1]
            for name in order:
                process, url = gateways[name]
                before = cpu_seconds(process.pid)
                result = run_load([(url, PATH)], body, 1, seconds, 0.2)
                if result.errors:
                    raise RuntimeError(f"gateway {name}: {result.error_samples}")
                figure = figures[name]
                figure["cpu"] += cpu_seconds(process.pid) - before
                figure["answered"] += len(result.latencies) + result.warmup_requests
                figure["latencies"] += result.latencies
    finally:
        for process, _ in gateways.values():
            process.terminate()
            process.wait(10)
    return {
        name: (f["cpu"] / f["answered"], statistics.median(f["latencies"])) for name, f in figures.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare with (any git revision)")
    parser.add_argument("--encoding", choices=["binary", "json"], default="binary")
    parser.add_argument("--delay", type=float, default=0.003, help="seconds the stand-ins wait (default 0.003)")
    parser.add_argument("--pairs", type=int, default=6, help="fresh pairs of gateways (default 6)")
    parser.add_argument("--rounds", type=int, default=4, help="turns per pair (default 4)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per turn (default 1)")
    args = parser.parse_args()

    body = body_for(1, binary=args.encoding == "binary")
    with tempfile.TemporaryDirectory(prefix="fanflow-compare-") as folder:
        base = Path(folder) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base],
                       check=True, capture_output=True)
        real = {"cnn_a": start_member("cnn_a", 0), "cnn_b": start_member("cnn_b", 1)}
        stand_ins = []
        try:
            endpoints = [{"url": p.wait_url(), "model": name} for name, p in real.items()]
            answers = [recorded_answer(e["url"], f"/v2/models/{e['model']}/infer", body) for e in endpoints]
            for process in real.values():
                process.stop()
            stand_ins = [start_stand_in(answer, args.delay) for answer in answers]
            members = [{"url": s.wait_url(), "model": e["model"]} for s, e in zip(stand_ins, endpoints, strict=True)]
            trees = {f"base ({args.base})": base, "this tree": ROOT}
            print(f"gateways over stand-ins answering after {args.delay * 1e3:g} ms, {args.encoding}, 1 client; "
                  f"{args.pairs} fresh pairs, load average {os.getloadavg()[0]:.1f} at start")
            pairs = []
            for i in range(args.pairs):
                pair = one_pair(trees, members, body, args.rounds, args.seconds)
                pairs.append(pair)
                shown = "; ".join(f"{name} {cpu * 1e3:.3f} ms CPU, p50 {p50 * 1e3:.2f} ms"
                                  for name, (cpu, p50) in pair.items())
                print(f"  pair {i + 1}: {shown}")
            for name in trees:
                cpu = statistics.median(p[name][0] for p in pairs)
                p50 = statistics.median(p[name][1] for p in pairs)
                print(f"{name:<24} median CPU per request {cpu * 1e3:.3f} ms, median p50 {p50 * 1e3:.2f} ms")
        finally:
            for process in [*real.values(), *stand_ins]:
                process.stop()
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           check=False, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
