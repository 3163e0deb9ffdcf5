"""Durations and sizes written by people (``90s``, ``1h30m``, ``7d``; ``512Mi``, ``2G``)."""

from __future__ import annotations

import re

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)d)?\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?!s))?\s*"
    r"(?:(\d+(?:\.\d+)?)s)?\s*(?:(\d+(?:\.\d+)?)ms)?\s*$"
)
_SECONDS = (86400, 3600, 60, 1, 0.001)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?)?B?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


def parse_duration(value: str | float | int) -> float:
    """Seconds, from a number or a text such as ``90s``, ``5m``, ``1h30m``, ``250ms``, ``7d``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 5m, 1h or 7d, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if not match or not any(match.groups()):
        raise ValueError(f"expected a duration such as 30s, 5m, 1h or 7d, got {value!r}")
    return sum(float(g) * unit for g, unit in zip(match.groups(), _SECONDS, strict=True) if g)


def parse_size(value: str | int) -> int:
    """Bytes, from a number or a text such as ``512Mi``, ``2Gi``, ``1G``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a memory size such as 512Mi or 2Gi, got {value!r}")
    if isinstance(value, int | float):
        return int(value)
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"expected a memory size such as 512Mi or 2Gi, got {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])
