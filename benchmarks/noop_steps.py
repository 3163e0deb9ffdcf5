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
