"""Workflows shipped in Python packages, found by name through the ``fanflow.workflows``
entry-point group. A package declares, in its pyproject.toml::

    [project.entry-points."fanflow.workflows"]
    video-entity-tagging = "fanflow.workflows:video_entity_tagging"

where the object named is the workflow file's path (a ``pathlib.Path`` or a string), so the
workflow stays a plain file inside the package."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from fanflow.vocab.imports import import_object

GROUP = "fanflow.workflows"


@dataclass(frozen=True)
class InstalledWorkflow:
    name: str
    value: str  # module:attribute
    package: str | None

    def path(self) -> Path:
        target = import_object(self.value)
        return Path(str(target))


def installed() -> dict[str, InstalledWorkflow]:
    found = {}
    for entry in metadata.entry_points(group=GROUP):
        package = entry.dist.name if entry.dist else None
        found[entry.name] = InstalledWorkflow(entry.name, entry.value, package)
    return dict(sorted(found.items()))


def find_installed(name: str) -> Path:
    workflows = installed()
    if name not in workflows:
        known = ", ".join(workflows) or "none"
        raise LookupError(f"no installed workflow named {name!r} (installed: {known})")
    path = workflows[name].path()
    if not path.is_file():
        raise LookupError(f"the installed workflow {name!r} points to {path}, which does not exist")
    return path
