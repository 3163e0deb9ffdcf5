"""Step functions of the fan-out / fan-in example: ordinary Python."""

import time


def numbers(n: int) -> list[int]:
    return list(range(1, n + 1))


def square(x: int, delay: float = 0.0) -> int:
    time.sleep(delay)
    return x * x


def total(values: list[int]) -> dict:
    return {"sum": sum(values), "count": len(values)}
