"""Step functions of the workflows the web UI's tests run."""

import sys
import time
from pathlib import Path

import fanflow


def numbers(n: int) -> list[int]:
    return list(range(n))


def wait(values: list[int], seconds: float = 0.0, gate: str = "") -> list[int]:
    """Sleep ``seconds``, or, given a ``gate`` file, until it exists (at most ``seconds``)."""
    print(f"waiting up to {seconds} s", flush=True)
    fanflow.progress(1, 2, unit="stages", numbers=len(values))
    fanflow.log("waiting for the gate")
    deadline = time.time() + seconds
    while time.time() < deadline and not (gate and Path(gate).exists()):
        time.sleep(0.05)
    print("done waiting", flush=True)
    fanflow.progress(2, 2, unit="stages", numbers=len(values))
    return values


def square(x: int) -> int:
    print(f"squaring {x}")
    if x == 3:
        print("three is about to fail", file=sys.stderr)
        raise ValueError("<script>alert(1)</script> cannot be squared")
    return x * x


def echo(text: str) -> dict:
    return {"text": text, "length": len(text)}


def total(values: list[int]) -> dict:
    return {"sum": sum(values), "count": len(values)}
