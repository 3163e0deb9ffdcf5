"""Step functions of the serving-restart benchmark (imported by the engine's processes)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import psutil

from fanflow.runtime import scratch_dir


def model_file(seed: int) -> dict:
    """A candidate as the selection step gives it: a name and a model file (here the seed of
    the benchmark's CNN, which ``load_cnn`` reads)."""
    path = Path(scratch_dir()) / f"cnn-{seed}.json"
    path.write_text(json.dumps({"seed": seed}))
    return {"name": f"cnn{seed}", "model": path}


def load_cnn(path):
    from serving_load import ClipCNN

    return ClipCNN(json.loads(Path(path).read_text())["seed"])


def _pid_listening_on(url: str) -> int:
    port = int(url.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return conn.pid
    raise RuntimeError(f"nothing listens on {url}")


def _ready(url: str, model: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/models/{model}/ready", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def load_and_kill(gateway: dict, members: list[dict], clients: int = 32, seconds: float = 6.0,
                  kill_after: float = 1.5) -> dict:
    """Load the gateway with ``clients`` closed-loop clients; SIGKILL the first member's
    process after ``kill_after`` s; report errors, degraded answers and when the member (its
    service restarted by the engine on the same address) answered ready again."""
    from bench_serving import body_for
    from serving_load import run_load

    victim = members[0]
    pid = _pid_listening_on(victim["url"])
    timeline: dict = {}

    async def kill_then_watch() -> None:
        await asyncio.sleep(kill_after)
        os.kill(pid, signal.SIGKILL)
        killed = time.perf_counter()
        timeline["killed_pid"] = pid
        while time.perf_counter() - killed < 30:
            await asyncio.sleep(0.05)
            if await asyncio.to_thread(_ready, victim["url"], victim["model"]):
                timeline["back_after_s"] = round(time.perf_counter() - killed, 2)
                timeline["new_pid"] = _pid_listening_on(victim["url"])
                return

    result = run_load([(gateway["url"], "/v2/models/ensemble/infer")], body_for(1), clients, seconds,
                      inspect=True, during=kill_then_watch)
    return {"clients": clients, "seconds": round(result.seconds, 2), "answers": len(result.latencies),
            "errors": result.errors, "degraded": result.degraded, "failed_members": result.failed_members,
            "p50_ms": round(result.percentile(50) * 1000, 2), "p99_ms": round(result.percentile(99) * 1000, 2),
            "member": victim["model"], **timeline}
