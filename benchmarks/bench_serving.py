"""Serving benchmark: the ensemble gateway against each of its members alone, on loopback.

Two model servers (each a torch CNN of the reference models' cost, one torch thread) and a
union gateway over them run in their own processes. A closed-loop load generator measures
p50 and p99 latency and throughput of each member alone and of the gateway, at 1 and at 32
concurrent clients; then it kills one member in the middle of a gateway run and counts the
errors (which must stay 0: the gateway answers degraded). The row "direct" is the load
generator sending each request to both members at once itself, with no gateway: the best a
fan-out can do on this machine, where the members, the gateway and the load generator share
the cores.

Target: gateway p50 ≤ 1.2 × the slower member's p50 + 1 ms (the members are called at
once, not one after the other); the last column is gateway p50 / that bound (≤ 1 passes).

    python benchmarks/bench_serving.py                # about a minute
    python benchmarks/bench_serving.py --seconds 10 --clips 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving_load import SHAPE, LoadResult, run_load, start_gateway, start_member

from fanflow.serving import wire


def body_for(clips: int, seed: int = 0) -> bytes:
    """A request as fanflow's client sends it: grey levels of 8-bit frames, as FP32."""
    frames = np.random.default_rng(seed).integers(0, 256, (clips, *SHAPE), dtype=np.uint8)
    return json.dumps(wire.infer_request(frames.astype(np.float32) / 255.0, "bench")).encode()


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.2f}"


def row(target: str, clients: int, result: LoadResult, note: str = "") -> str:
    return (
        f"{target:<10} {clients:>7} {result.requests:>8} {ms(result.percentile(50))} {ms(result.percentile(99))}"
        f" {result.throughput:>9.1f} {result.errors:>6}  {note}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run (default 4)")
    parser.add_argument("--clips", type=int, default=1, help="clips per request (default 1)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=4, help="turns each run is split into (default 4)")
    parser.add_argument("--kill-clients", type=int, default=32, help="clients during the kill run")
    parser.add_argument("--member-timeout", type=float, default=5.0)
    args = parser.parse_args(argv)

    body = body_for(args.clips)
    print(
        f"serving benchmark: {os.cpu_count()} cores, 2 members (torch CNN, 1 thread each), union gateway; "
        f"{args.clips} clip(s) {SHAPE} per request, {len(body) / 1024:.0f} KiB JSON body; "
        f"{args.seconds:g} s per target and concurrency, in {args.rounds} turns"
    )
    started = time.perf_counter()
    members = {"cnn_a": start_member("cnn_a", 0), "cnn_b": start_member("cnn_b", 1)}
    endpoints = [{"url": p.wait_url(), "model": name} for name, p in members.items()]
    gateway = start_gateway(endpoints, strategy="union", member_timeout=args.member_timeout)
    gateway_url = gateway.wait_url()
    print(f"servers up in {time.perf_counter() - started:.1f} s\n")

    member_targets = {e["model"]: [(e["url"], f"/v2/models/{e['model']}/infer")] for e in endpoints}
    targets = {
        **member_targets,
        # No gateway: the load generator itself sends each request to both members at once
        # and waits for both. What the machine allows a fan-out at best.
        "direct": [t for ts in member_targets.values() for t in ts],
        "gateway": [(gateway_url, "/v2/models/ensemble/infer")],
    }
    header = f"{'target':<10} {'clients':>7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9} {'errors':>6}"
    print(header)
    print("-" * len(header) + "-" * 24)
    results: dict[tuple[str, int], LoadResult] = {}
    failures = 0
    try:
        for clients in args.concurrency:
            # Short runs in turn rather than one long run each, so that a change in the
            # machine's other load weighs on every target alike.
            for target in targets:
                results[target, clients] = LoadResult()
            for _ in range(args.rounds):
                for target, addresses in targets.items():
                    part = run_load(
                        addresses, body, clients, args.seconds / args.rounds, 0.25, target == "gateway"
                    )
                    results[target, clients].add(part)
            for target in targets:
                result = results[target, clients]
                failures += result.errors
                note = ""
                if target in ("direct", "gateway"):
                    slower = max(results[m, clients].percentile(50) for m in members)
                    ratio = result.percentile(50) / (1.2 * slower + 0.001)
                    note = f"p50 / (1.2 × slower member p50 + 1 ms) = {ratio:.2f}"
                print(row(target, clients, result, note), flush=True)
                for sample in result.error_samples:
                    print(f"    error: {sample}")

        victim = "cnn_b"

        async def kill_member() -> None:
            import asyncio

            await asyncio.sleep(args.seconds / 3)
            members[victim].kill()

        killed = run_load(
            targets["gateway"], body, args.kill_clients, args.seconds, inspect=True, during=kill_member
        )
        failures += killed.errors
        print(
            "\n"
            + row("gateway", args.kill_clients, killed, f"{victim} killed after {args.seconds / 3:.1f} s")
        )
        print(
            f"    answers: {len(killed.latencies)} (200), of which degraded: {killed.degraded}"
            f" (failed members: {killed.failed_members}); errors: {killed.errors}"
        )
        for sample in killed.error_samples:
            print(f"    error: {sample}")
    finally:
        gateway.stop()
        for process in members.values():
            process.stop()
    print(f"\ntotal {time.perf_counter() - started:.0f} s; errors in all runs: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
