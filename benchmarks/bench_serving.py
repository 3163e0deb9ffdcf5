"""Serving benchmark: the ensemble gateway against each of its members alone, on loopback.

Two model servers (each a torch CNN of the reference models' cost, one torch thread) and a
union gateway over them run in their own processes. A closed-loop load generator measures
p50 and p99 latency and throughput of each member alone and of the gateway, at 1 and at 32
concurrent clients, with tensors sent as JSON and as binary data (answers as the request
asks: JSON, or binary outputs); then it kills one member in the middle of a gateway run and
counts the errors (which must stay 0: the gateway answers degraded). The row "direct" is the
load generator sending each request to both members at once itself, with no gateway: the
best a fan-out can do on this machine, where the members, the gateway and the load generator
share the cores: a member alone has the whole machine, two in the ensemble share it. With
``--pin`` each member runs on a core of its own, alone and in the ensemble, so that a member
has the same CPU in both (the gateway and the load generator run anywhere): the fair
comparison when the members are saturated (32 clients); at 1 client it costs latency, as a
member must wait for its core while the gateway or the load generator holds it.

Target: gateway p50 ≤ 1.2 × the slower member's p50 + 1 ms (the members are called at
once, not one after the other); the last column is gateway p50 / that bound (≤ 1 passes),
and for the gateway its CPU time per request (user and system, warm-up included in both):
a figure that the machine's other load disturbs far less than latency.

With ``--stand-ins``, a second gateway runs over stand-ins that answer every request with what
the members answered (recorded once): at once, its p50 and CPU time per request at 1 client
are the gateway's own cost, which the members' work and the machine's other load hide in the
rows above; after ``--stand-in-delay`` (3 ms, about a member's own time for one clip here,
waited on a timer: the stand-ins take no CPU), the gateway meets a member's timing without
the members' work on the cores, and its p50 is set against the same bound, with a stand-in
alone timed beside it as the member.

Last, "big requests": 4 requests of the largest allowed body (32 MiB) in flight at once to a
member and to the gateway, JSON and binary, while a liveness probe asks ``/v2/health/live``
every 20 ms on a new connection (as Kubernetes does): the probe's p50, p99 and max (target
p99 < 50 ms), and each server's peak memory over its memory before (the sum of the PSS of the
server and its decoding worker, after one unmeasured request of the same body; target < 3 ×
the body size per request in flight).

    python benchmarks/bench_serving.py                # a few minutes
    python benchmarks/bench_serving.py --seconds 10 --clips 4
    python benchmarks/bench_serving.py --concurrency 1 --skip-big --skip-kill --stand-ins
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving_load import (
    SHAPE,
    Body,
    LoadResult,
    recorded_answer,
    request_bytes,
    run_load,
    start_gateway,
    start_member,
    start_stand_in,
)

from fanflow.serving import wire
from fanflow.serving.protocol import DEFAULT_MAX_BODY_BYTES

MiB = 2**20


def frames_for(clips: int, seed: int = 0) -> np.ndarray:
    """Grey levels of 8-bit frames, as FP32 in [0, 1]."""
    frames = np.random.default_rng(seed).integers(0, 256, (clips, *SHAPE), dtype=np.uint8)
    return frames.astype(np.float32) / 255.0


def body_for(clips: int, seed: int = 0, binary: bool = False) -> Body:
    """A request for ``clips`` clips: JSON as fanflow's JSON writer sends it (7 decimals), or
    binary tensor data asking binary outputs, as fanflow's client and tritonclient send it."""
    frames = frames_for(clips, seed)
    if not binary:
        return Body(json.dumps(wire.infer_request(frames, "bench")).encode())
    parts, json_length = wire.binary_request(frames, "bench")
    return Body(b"".join(parts), json_length)


def largest_body(binary: bool) -> Body:
    """The largest body under the servers' 32 MiB limit, of random clips."""
    per_clip = len(body_for(2, binary=binary).content) - len(body_for(1, binary=binary).content)
    clips = (DEFAULT_MAX_BODY_BYTES - 4096) // per_clip
    body = body_for(clips, binary=binary)
    while len(body.content) > DEFAULT_MAX_BODY_BYTES:
        clips -= 8
        body = body_for(clips, binary=binary)
    return body


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.2f}"


def row(target: str, encoding: str, clients: int, result: LoadResult, note: str = "") -> str:
    return (
        f"{target:<10} {encoding:<7} {clients:>7} {result.requests:>8} {ms(result.percentile(50))} {ms(result.percentile(99))}"
        f" {result.throughput:>9.1f} {result.errors:>6}  {note}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run (default 4)")
    parser.add_argument("--clips", type=int, default=1, help="clips per request (default 1)")
    parser.add_argument(
        "--concurrency", type=int, nargs="*", default=[1, 32], help="clients per run; none: no load runs"
    )
    parser.add_argument("--rounds", type=int, default=4, help="turns each run is split into (default 4)")
    parser.add_argument("--kill-clients", type=int, default=32, help="clients during the kill run")
    parser.add_argument("--member-timeout", type=float, default=5.0)
    parser.add_argument("--skip-big", action="store_true", help="leave out the big-requests part")
    parser.add_argument("--skip-kill", action="store_true", help="leave out the killed-member run")
    parser.add_argument(
        "--pin", action="store_true", help="give each member a core of its own, alone and in the ensemble"
    )
    parser.add_argument(
        "--stand-ins",
        action="store_true",
        help="also time a gateway over members that answer at once (its own cost, at 1 client)",
    )
    parser.add_argument(
        "--stand-in-delay",
        type=float,
        default=0.003,
        help="seconds the delayed stand-ins wait before answering, using no CPU (default 0.003: "
        "about a member's own time for one clip here)",
    )
    args = parser.parse_args(argv)

    bodies = {"json": body_for(args.clips), "binary": body_for(args.clips, binary=True)}
    print(
        f"serving benchmark: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; "
        f"2 members (torch CNN, 1 thread each), union gateway; {args.clips} clip(s) {SHAPE} per request: "
        f"{len(bodies['json'].content) / 1024:.0f} KiB as JSON, {len(bodies['binary'].content) / 1024:.0f} KiB "
        f"binary; {args.seconds:g} s per target, encoding and concurrency, in {args.rounds} turns; "
        + ("each member on a core of its own" if args.pin else "members on any core")
    )
    started = time.perf_counter()
    members = {"cnn_a": start_member("cnn_a", 0), "cnn_b": start_member("cnn_b", 1)}
    endpoints = [{"url": p.wait_url(), "model": name} for name, p in members.items()]
    cores = sorted(os.sched_getaffinity(0))
    if args.pin:
        # As pods with a CPU each: a member alone and a member in the ensemble have the same
        # core, so the comparison is of the gateway, not of one member given the whole machine
        # against two sharing it. The gateway and the load generator run anywhere.
        for i, process in enumerate(members.values()):
            os.sched_setaffinity(process.process.pid, {cores[i % len(cores)]})
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
    header = (
        f"{'target':<10} {'body':<7} {'clients':>7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'req/s':>9} {'errors':>6}"
    )
    print(header)
    print("-" * len(header) + "-" * 24)
    failures = 0
    try:
        for clients in args.concurrency:
            for encoding, body in bodies.items():
                results = {target: LoadResult() for target in targets}
                gateway_cpu = 0.0  # seconds of CPU the gateway process spent in its runs
                # Short runs in turn rather than one long run each, so that a change in the
                # machine's other load weighs on every target alike.
                for _ in range(args.rounds):
                    for target, addresses in targets.items():
                        before = cpu_seconds(gateway.process.pid)
                        part = run_load(addresses, body, clients, args.seconds / args.rounds, 0.25)
                        if target == "gateway":
                            gateway_cpu += cpu_seconds(gateway.process.pid) - before
                        results[target].add(part)
                for target, result in results.items():
                    failures += result.errors
                    note = ""
                    if target in ("direct", "gateway"):
                        slower = max(results[m].percentile(50) for m in members)
                        ratio = result.percentile(50) / (1.2 * slower + 0.001)
                        note = f"p50 / (1.2 × slower member p50 + 1 ms) = {ratio:.2f}"
                    if target == "gateway" and result.latencies:
                        answered = len(result.latencies) + result.errors + result.warmup_requests
                        note += f"; gateway CPU {gateway_cpu / answered * 1e3:.2f} ms per request"
                    print(row(target, encoding, clients, result, note), flush=True)
                    for sample in result.error_samples:
                        print(f"    error: {sample}")

        if args.stand_ins:
            failures += stand_in_runs(endpoints, bodies, args.seconds, args.rounds, [0.0, args.stand_in_delay])

        if not args.skip_big:
            print(
                "\n4 requests of the largest body in flight; liveness probed every 20 ms on a new connection"
            )
            print(
                f"{'server':<10} {'body':<7} {'MiB':>6} {'answers':>7} {'seconds':>8} {'live p50':>9} "
                f"{'live p99':>9} {'live max':>9} {'probes':>6} {'peak mem +MiB':>14} {'/ (3 × 4 × body)':>17}"
            )
            servers = {"cnn_a": members["cnn_a"], "gateway": gateway}
            for encoding in ("json", "binary"):
                body = largest_body(encoding == "binary")
                for name, process in servers.items():
                    url = endpoints[0]["url"] if name == "cnn_a" else gateway_url
                    path = f"/v2/models/{name}/infer" if name == "cnn_a" else "/v2/models/ensemble/infer"
                    big = big_requests(process.process.pid, url, path, body)
                    failures += big["errors"]
                    limit = 3 * 4 * len(body.content) / MiB
                    print(
                        f"{name:<10} {encoding:<7} {len(body.content) / MiB:6.1f} {big['answers']:>7} "
                        f"{big['seconds']:8.1f} {ms(big['p50'])} {ms(big['p99'])} {ms(big['max'])} "
                        f"{big['probes']:>6} {big['rss'] / MiB:14.0f} {big['rss'] / MiB / limit:17.2f}",
                        flush=True,
                    )
                    for status, count in sorted(big["statuses"].items()):
                        if status != 200:
                            print(f"    answered {status}: {count}; {big['samples'].get(status, '')}")

        if not args.skip_kill:
            victim = "cnn_b"

            async def kill_member() -> None:
                await asyncio.sleep(args.seconds / 3)
                members[victim].kill()

            killed = run_load(
                targets["gateway"],
                bodies["json"],
                args.kill_clients,
                args.seconds,
                inspect=True,
                during=kill_member,
            )
            failures += killed.errors
            print(
                "\n"
                + row(
                    "gateway",
                    "json",
                    args.kill_clients,
                    killed,
                    f"{victim} killed after {args.seconds / 3:.1f} s",
                )
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
    print(
        f"\ntotal {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f} at the end; "
        f"errors in all runs: {failures}"
    )
    return 1 if failures else 0


def stand_in_runs(
    endpoints: list[dict], bodies: dict[str, Body], seconds: float, rounds: int, delays: list[float]
) -> int:
    """A second gateway, over stand-ins that answer with what each member answered (recorded
    once per encoding), at 1 client: at once, the gateway's own latency and CPU per request,
    which the members' work and the machine's other load no longer hide; after a delay (a
    timer: the stand-ins use no CPU meanwhile), the same with a member's timing, against the
    same bound as the members (a stand-in alone timed beside it). Returns the errors."""
    print("\ngateway over stand-in members that answer with what the members answered (recorded), "
          "at once or after a delay that takes no CPU; 1 client")
    print(
        f"{'body':<7} {'delay ms':>8} {'stand-in p50':>12} {'gateway p50':>11} {'p99 ms':>8} {'req/s':>9} "
        f"{'errors':>6} {'CPU ms/request':>15}  p50 / (1.2 × stand-in p50 + 1 ms)"
    )
    errors = 0
    for encoding, body in bodies.items():
        answers = [recorded_answer(e["url"], f"/v2/models/{e['model']}/infer", body) for e in endpoints]
        for delay in delays:
            stand_ins = [start_stand_in(answer, delay) for answer in answers]
            gateway = None
            try:
                members = [
                    {"url": s.wait_url(), "model": e["model"]} for s, e in zip(stand_ins, endpoints, strict=True)
                ]
                gateway = start_gateway(members, strategy="union")
                target = [(gateway.wait_url(), "/v2/models/ensemble/infer")]
                alone = [(members[0]["url"], f"/v2/models/{members[0]['model']}/infer")]
                result, single, cpu = LoadResult(), LoadResult(), 0.0
                for _ in range(rounds):
                    single.add(run_load(alone, body, 1, seconds / rounds / 2, 0.25))
                    before = cpu_seconds(gateway.process.pid)
                    result.add(run_load(target, body, 1, seconds / rounds, 0.25))
                    cpu += cpu_seconds(gateway.process.pid) - before
                answered = len(result.latencies) + result.errors + result.warmup_requests
                ratio = result.percentile(50) / (1.2 * single.percentile(50) + 0.001)
                print(
                    f"{encoding:<7} {delay * 1e3:8.1f} {single.percentile(50) * 1e3:12.2f} "
                    f"{result.percentile(50) * 1e3:11.2f} {ms(result.percentile(99))} {result.throughput:>9.1f} "
                    f"{result.errors + single.errors:>6} {cpu / answered * 1e3:15.2f}  {ratio:.2f}",
                    flush=True,
                )
                errors += result.errors + single.errors
            finally:
                for process in [*stand_ins, *([gateway] if gateway else [])]:
                    process.stop()
    return errors


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def rss_of(process: psutil.Process) -> int:
    """The memory of a server and of its children (the decoding workers), as the sum of their
    proportional set sizes: a sum of RSS would count twice the pages they share (a body in
    shared memory, the libraries)."""
    total = process.memory_full_info().pss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_full_info().pss
    return total


async def _post(host: str, port: int, payload: bytes) -> tuple[int, bytes]:
    """Send one request (``payload``: head and body) on a new connection; its status and body."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
    )
    answer = await reader.readexactly(length)
    writer.close()
    return int(head.split(b" ")[1]), answer


def big_requests(pid: int, url: str, path: str, body: Body, in_flight: int = 4) -> dict:
    """Send ``in_flight`` copies of ``body`` at once while probing liveness; the probe's
    latencies and the server's peak memory over its memory before. One request of the same
    body goes first, unmeasured: what a server allocates once (its decoding worker, the
    model's buffers for a large batch) is not what each request in flight takes."""
    process = psutil.Process(pid)
    host, port, payload = request_bytes(url, path, body)
    asyncio.run(_post(host, port, payload))
    before = rss_of(process)
    peak = before
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.is_set():
            peak = max(peak, rss_of(process))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    samples: dict[int, str] = {}

    async def one_big() -> int:
        status, answer = await _post(host, port, payload)
        if status != 200:
            samples[status] = answer[:300].decode("utf-8", "replace")
        return status

    async def probe() -> float:
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /v2/health/live HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await reader.read()
        writer.close()
        return time.perf_counter() - start

    async def run() -> tuple[list[int], list[float], float]:
        start = time.perf_counter()
        bigs = asyncio.gather(*(one_big() for _ in range(in_flight)))
        latencies = []
        while not bigs.done():
            latencies.append(await probe())
            await asyncio.sleep(0.02)
        return await bigs, latencies, time.perf_counter() - start

    statuses, latencies, seconds = asyncio.run(run())
    sampling.set()
    sampler.join()
    return {
        "answers": sum(s == 200 for s in statuses),
        "errors": sum(s != 200 for s in statuses),
        "seconds": seconds,
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "max": max(latencies),
        "probes": len(latencies),
        "rss": peak - before,
        "statuses": {s: statuses.count(s) for s in set(statuses)},
        "samples": samples,
    }


if __name__ == "__main__":
    sys.exit(main())
