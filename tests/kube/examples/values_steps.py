"""Step functions whose values are hard to carry faithfully: strings that read as other
types, floats with integral values, integers above 2**53, dicts with unsorted keys, items
without names, and outputs of a few kilobytes each."""

from __future__ import annotations

import hashlib
import json


def numbers(width: int) -> dict:
    return {
        "values": [1.0, 2.5, 2**53 + 1, 12345678901234567891, 1e21, 1.5e-7, -0.0, 3, float("inf")],
        "record": {"z": 1, "a": {"y": 1.0, "b": "$x", "c": "{{item}}", "d": "<&>\u2028"}, "m": [True, None]},
        "records": [{"a": 1}, {"a": 1}, {"b": [1.0]}],
        "indexes": list(range(width)),
    }


def echo(value) -> dict:
    """The value, and the Python type it arrived as."""
    return {"got": value, "type": type(value).__name__}


def block(i: int, size: int) -> dict:
    """About ``size`` bytes of text made from ``i``."""
    seed = hashlib.sha256(str(i).encode()).hexdigest()
    return {"i": i, "text": (seed * (size // len(seed) + 1))[:size]}


def gather(**collected) -> dict:
    """A digest of everything collected, in the order and form it arrived, and its sizes."""
    text = json.dumps(collected, ensure_ascii=False)
    return {
        "digest": hashlib.sha256(text.encode()).hexdigest(),
        "sizes": {k: len(v) if isinstance(v, list) else 1 for k, v in collected.items()},
    }


def fail(n: int) -> dict:
    raise ValueError(f"branch {n} cannot succeed")
