"""Step functions the engine benchmarks run."""

import time


def make(n: int) -> list[int]:
    return list(range(n))


def noop(x: int) -> int:
    return x


def add(values: list[int]) -> int:
    return sum(values)


def burn(seconds: float, x: int = 0) -> float:
    """Busy CPU work for about ``seconds`` (no sleeping)."""
    end = time.process_time() + seconds
    total = 0.0
    while time.process_time() < end:
        for i in range(1000):
            total += i * 0.5
    return total


def burn_timed(seconds: float, x: int = 0) -> dict:
    started = time.perf_counter()
    burn(seconds, x)
    return {"x": x, "wall": time.perf_counter() - started}


def add_durations(runs: list[dict]) -> float:
    return sum(r["wall"] for r in runs)


def big(mb: int):
    import numpy as np

    return {"array": np.ones(mb * 2**20 // 8, dtype=np.float64)}


def touch_all(data: dict, i: int) -> dict:
    array = data["array"]
    return {"i": i, "sum": float(array.sum())}


def nap(seconds: float, x: int = 0) -> int:
    """Sleep ``seconds`` (a task that takes wall time, not CPU)."""
    time.sleep(seconds)
    return x
