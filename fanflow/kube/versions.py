"""The Argo Workflows versions fanflow's manifests are made for, and the fields that differ
between them.

Every manifest is valid on each supported version: ``--argo-version`` names the oldest
version the cluster runs, and only fields that version knows are written. The one field
that depends on it today is ``retryStrategy.backoff.cap`` (Argo 3.7 and later)."""

from __future__ import annotations

import re

SUPPORTED = ("3.4", "3.5", "3.6", "3.7", "4.0", "4.1")
OLDEST = SUPPORTED[0]
BACKOFF_CAP = (3, 7)  # retryStrategy.backoff.cap appears in Argo v3.7.0


class VersionError(ValueError):
    pass


def parse(text: str) -> tuple[int, int]:
    """``3.6`` or ``v3.6.19`` → (3, 6); a version outside the supported range is an error."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", text.strip())
    if not match:
        raise VersionError(f"--argo-version {text!r}: expected a version such as 3.6 or v3.7.2")
    version = (int(match.group(1)), int(match.group(2)))
    if f"{version[0]}.{version[1]}" not in SUPPORTED:
        raise VersionError(
            f"--argo-version {text}: fanflow's manifests are made for Argo Workflows "
            f"{SUPPORTED[0]} to {SUPPORTED[-1]}"
        )
    return version


def has_backoff_cap(version: tuple[int, int]) -> bool:
    return version >= BACKOFF_CAP
