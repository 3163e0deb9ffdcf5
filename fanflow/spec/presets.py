"""Presets: named parameter sets a workflow declares,

    presets:
      quick: {description: A smoke test; its numbers mean nothing., params: {epochs: 1}}

``fanflow run FILE --preset quick`` (``fanflow.run(..., preset="quick")``) runs the workflow
with the preset's values as its parameters' defaults, so values given with -p still win.
Their names, types and choices are checked when the workflow is loaded (``validate``)."""

from __future__ import annotations

import difflib

from fanflow.spec.errors import SpecError, SpecIssue
from fanflow.spec.model import Workflow


def apply_preset(workflow: Workflow, name: str | None) -> Workflow:
    """The workflow with preset ``name``'s values as its parameters' defaults (``None``: the
    workflow as it is); an unknown name is a ``SpecError`` listing the valid ones."""
    if name is None:
        return workflow
    preset = workflow.presets.get(name)
    if preset is None:
        close = difflib.get_close_matches(name, list(workflow.presets), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        valid = ", ".join(workflow.presets) or "none: the workflow declares no presets"
        raise SpecError(SpecIssue(f"unknown preset {name!r}{hint}; valid: {valid}", field="presets",
                                  file=workflow.source or workflow.name))
    params = {
        key: param.model_copy(update={"default": preset.params[key], "required": False})
        if key in preset.params else param
        for key, param in workflow.params.items()
    }
    return workflow.model_copy(update={"params": params})
