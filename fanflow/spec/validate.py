"""Checks that need the whole workflow: references, dependencies, cycles, quorums, functions."""

from __future__ import annotations

import ast
import difflib
import graphlib
import importlib.util
import sys
from contextlib import contextmanager
from pathlib import Path as FilePath

from fanflow.spec import conditions
from fanflow.spec.errors import SpecError, SpecIssue
from fanflow.spec.graph import fans_in, step_refs, upstream
from fanflow.spec.model import Step, Workflow, type_name
from fanflow.spec.positions import Positions
from fanflow.spec.refs import ITEM, PARAMS, Ref, RefSyntaxError, whole_ref
from fanflow.vocab.imports import shipped_digest


def check(workflow: Workflow, positions: Positions | None = None, *, check_imports: bool = True) -> None:
    """Raise SpecError listing every problem in ``workflow``."""
    positions = positions or Positions(file=workflow.source)
    issues: list[SpecIssue] = []
    for name, param in workflow.params.items():
        issues += _check_param(name, param, positions)
    for name, step in workflow.steps.items():
        issues += _check_step(workflow, name, step, positions)
    if not issues:
        issues += _check_cycles(workflow, positions)
    if not issues and check_imports:
        with importable_from(workflow.source, workflow.import_paths):
            for name, step in workflow.steps.items():
                if shipped_digest(step.uses):
                    continue  # shipped with the workflow, not imported by name
                problem = missing_function(step.uses)
                if problem:
                    issues.append(positions.issue(problem, ("steps", name, "uses")))
    if issues:
        raise SpecError(issues)


def _check_param(name, param, positions) -> list[SpecIssue]:
    where = ("params", name)
    if param.default is not None and param.type not in ("any",) and not _fits(param.default, param.type):
        return [
            positions.issue(f"default {param.default!r} is not of type {param.type}", (*where, "default"))
        ]
    if param.choices is not None and param.default is not None and param.default not in param.choices:
        return [positions.issue(f"default {param.default!r} is not one of {param.choices}", where)]
    return []


def _fits(value, kind: str) -> bool:
    actual = type_name(value)
    return actual == kind or (kind == "float" and actual == "int")


def _check_step(workflow: Workflow, name: str, step: Step, positions: Positions) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    base = ("steps", name)
    try:
        refs = step_refs(step)
    except RefSyntaxError as exc:
        return [positions.issue(str(exc), base)]
    for ref, where in refs:
        problem = _check_ref(workflow, name, step, ref, where)
        if problem:
            issues.append(positions.issue(problem, (*base, *where)))
    for index, need in enumerate(step.needs):
        if need not in workflow.steps:
            issues.append(
                positions.issue(
                    f"unknown step {need!r}{_suggest(need, workflow.steps)}", (*base, "needs", index)
                )
            )
        elif need == name:
            issues.append(positions.issue("a step cannot need itself", (*base, "needs", index)))
    if step.fan_out:
        for axis, values in step.fan_out.items():
            where = (*base, "fan_out", axis)
            if isinstance(values, str) and whole_ref(values) is None:
                issues.append(
                    positions.issue(
                        f"expected a list of values or one ${{...}} reference, got {values!r}", where
                    )
                )
            elif isinstance(values, list) and not values:
                issues.append(positions.issue("an empty list fans out into no tasks", where))
    if isinstance(step.when, str):
        problem = conditions.syntax_problem(step.when)
        if problem:
            issues.append(positions.issue(problem, (*base, "when")))
    issues += _check_quorum(workflow, name, step, positions)
    if step.executor == "thread" and step.timeout is not None:
        issues.append(
            positions.issue(
                "a thread cannot be killed when it times out; use executor: process with timeout",
                (*base, "timeout"),
            )
        )
    if step.kind == "service" and step.executor == "thread":
        issues.append(
            positions.issue("a service runs in its own process; remove executor: thread", (*base, "executor"))
        )
    return issues


def _check_ref(workflow: Workflow, name: str, step: Step, ref: Ref, where: tuple) -> str | None:
    field = where[0]
    if ref.root == PARAMS:
        if not ref.path:
            return "expected a parameter name: ${params.NAME}"
        if ref.path[0] not in workflow.params:
            return f"unknown parameter {ref.path[0]!r}{_suggest(ref.path[0], workflow.params)}"
        return None
    if ref.root == ITEM:
        if field != "with":
            return "${item} is only defined in 'with', for each task of a fan-out"
        if not step.fan_out:
            return f"{ref} is only defined in a step with fan_out"
        if ref.path and ref.path[0] not in step.fan_out:
            axes = ", ".join(step.fan_out)
            return f"{ref}: the fan-out has no axis {ref.path[0]!r} (axes: {axes})"
        return None
    if ref.root not in workflow.steps:
        return f"{ref} names an unknown step {ref.root!r}{_suggest(ref.root, workflow.steps)}"
    if ref.root == name:
        return f"{ref}: a step cannot use its own output"
    target = workflow.steps[ref.root]
    if ref.collect and not target.fan_out:
        return f"{ref}: fan-in over {ref.root!r}, which does not fan out; use ${{{ref.root}}}"
    if not ref.collect and target.fan_out:
        return (
            f"{ref}: {ref.root!r} fans out into several tasks; use ${{{ref.root}[*]}} "
            "to collect their outputs"
        )
    return None


def _check_quorum(workflow: Workflow, name: str, step: Step, positions: Positions) -> list[SpecIssue]:
    where = ("steps", name, "min_success")
    if step.min_success is None:
        if step.wait == "quorum":
            return [positions.issue("wait: quorum needs min_success", ("steps", name, "wait"))]
        return []
    sources = fans_in(workflow, name)
    if not sources:
        return [
            positions.issue(
                "min_success applies to a fan-in: collect a fanned-out step's branches with ${step[*]}", where
            )
        ]
    if isinstance(step.min_success, int):
        width = 0
        for source in sources:
            axes = workflow.steps[source].fan_out or {}
            if any(isinstance(v, str) for v in axes.values()):
                return []  # known only at run time
            product = 1
            for values in axes.values():
                product *= len(values)
            width += product
        if step.min_success > width:
            return [
                positions.issue(
                    f"min_success {step.min_success} is more than the {width} "
                    f"branches of {', '.join(sources)}",
                    where,
                )
            ]
    return []


def _check_cycles(workflow: Workflow, positions: Positions) -> list[SpecIssue]:
    graph = {name: upstream(workflow, name) for name in workflow.steps}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        return [positions.issue(f"cycle: {' -> '.join(reversed(cycle))}", ("steps", cycle[0]))]
    return []


def _suggest(word: str, known) -> str:
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@contextmanager
def importable_from(source: str | None, extra: list[str] = ()):
    """Make modules that sit next to the workflow file (and its sub-workflows') importable."""
    folders = [str(FilePath(source).resolve().parent)] if source else []
    folders += [f for f in extra if f not in folders]
    added = [f for f in folders if f not in sys.path]
    for folder in reversed(added):
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        for folder in added:
            sys.path.remove(folder)


def missing_function(uses: str) -> str | None:
    """Why ``module:function`` cannot be found, without running the module, or None."""
    module, _, attribute = uses.partition(":")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        return f"cannot find module {module!r}: {exc}"
    if spec is None:
        return f"cannot find module {module!r}"
    loaded = sys.modules.get(module)
    if loaded is not None and _same_file(getattr(loaded, "__file__", None), spec.origin):
        target = loaded
        for part in attribute.split("."):
            if not hasattr(target, part):
                return f"module {module!r} defines no {part!r}{_suggest(part, dir(target))}"
            target = getattr(target, part)
        return None if callable(target) else f"{uses} is not a function"
    origin = spec.origin
    if not origin or not origin.endswith(".py"):
        return None  # a compiled or namespace module: checked when the task runs
    try:
        tree = ast.parse(FilePath(origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        return f"cannot read module {module!r}: {exc}"
    top = attribute.split(".")[0]
    if top in _defined_names(tree) or _has_dynamic_names(tree):
        return None
    return f"module {module!r} defines no {top!r}{_suggest(top, _defined_names(tree))}"


def _same_file(a: str | None, b: str | None) -> bool:
    """Whether a loaded module is the one the workflow's import path finds (another folder's
    module of the same name may be loaded already)."""
    if a is None or b is None:
        return a is None and b in (None, "built-in", "frozen")
    return FilePath(a).resolve() == FilePath(b).resolve()


def _defined_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _has_dynamic_names(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            return True
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            return True
    return False
