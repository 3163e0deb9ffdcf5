"""The workflow spec: what a workflow is, its two front ends (YAML and Python) and validation."""

from fanflow.spec.errors import SpecError, SpecIssue
from fanflow.spec.model import Param, Resources, Step, Workflow

__all__ = ["Param", "Resources", "SpecError", "SpecIssue", "Step", "Workflow"]
