"""Checks that need the whole workflow: references, dependencies, cycles, quorums, functions."""

from __future__ import annotations

import difflib
import graphlib
import importlib.util
import inspect
import sys
from contextlib import contextmanager
from pathlib import Path as FilePath

from fanflow.spec import conditions
from fanflow.spec.errors import SpecError, SpecIssue
from fanflow.spec.graph import fans_in, step_refs, upstream
from fanflow.spec.model import Preset, Step, Workflow, type_name
from fanflow.spec.outline import outline
from fanflow.spec.positions import Positions
from fanflow.spec.refs import ITEM, PARAMS, Ref, RefSyntaxError, whole_ref
from fanflow.vocab.imports import shipped_digest


def check(workflow: Workflow, positions: Positions | None = None, *, check_imports: bool = True) -> None:
    """Raise SpecError listing every problem in ``workflow``."""
    positions = positions or Positions(file=workflow.source)
    issues: list[SpecIssue] = []
    for name, param in workflow.params.items():
        issues += _check_param(name, param, positions)
    for name, preset in workflow.presets.items():
        issues += _check_preset(workflow, name, preset, positions)
    for name, step in workflow.steps.items():
        issues += _check_step(workflow, name, step, positions)
    if not issues:
        issues += _check_cycles(workflow, positions)
    if not issues and check_imports:
        folders = _folders(workflow.source, workflow.import_paths)
        with importable_from(workflow.source, workflow.import_paths):
            for name, step in workflow.steps.items():
                if shipped_digest(step.uses):
                    continue  # shipped with the workflow, not imported by name
                for problem, where in function_problems(step.uses, list(step.with_), folders):
                    issues.append(positions.issue(problem, ("steps", name, *where)))
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


def _check_preset(workflow: Workflow, name: str, preset: Preset, positions: Positions) -> list[SpecIssue]:
    """A preset's values are checked as a parameter's default is: a declared name, the
    declared type, one of its choices."""
    issues = []
    for key, value in preset.params.items():
        where = ("presets", name, "params", key)
        param = workflow.params.get(key)
        if param is None:
            known = ", ".join(workflow.params) or "none"
            issues.append(positions.issue(f"unknown parameter {key!r}{_suggest(key, workflow.params)} "
                                          f"(known: {known})", where))
        elif value is not None and param.type != "any" and not _fits(value, param.type):
            issues.append(positions.issue(f"expected a value of type {param.type}, got {value!r}", where))
        elif param.choices is not None and value not in param.choices:
            issues.append(positions.issue(f"expected one of {param.choices}, got {value!r}", where))
    return issues


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
            elif isinstance(values, str):
                problem = _fan_out_over_non_list(workflow, whole_ref(values))
                if problem:
                    issues.append(positions.issue(problem, where))
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


def _fan_out_over_non_list(workflow: Workflow, ref: Ref) -> str | None:
    """A fan-out over a parameter that cannot hold a list (a step's output is known only when
    it runs)."""
    if ref.root != PARAMS or len(ref.path) != 1 or ref.path[0] not in workflow.params:
        return None
    param = workflow.params[ref.path[0]]
    kind = param.type if param.type != "any" else (type_name(param.default) if param.default is not None else "any")
    if kind in ("list", "any"):
        return None
    return f"fans out over {ref}, a parameter of type {kind}: a fan-out needs a list (make it type: list)"


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


def _folders(source: str | None, extra: list[str] = ()) -> list[str]:
    folders = [str(FilePath(source).resolve().parent)] if source else []
    return folders + [f for f in extra if f not in folders]


@contextmanager
def importable_from(source: str | None, extra: list[str] = ()):
    """Make modules that sit next to the workflow file (and its sub-workflows') importable."""
    folders = _folders(source, extra)
    added = [f for f in folders if f not in sys.path]
    for folder in reversed(added):
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        for folder in added:
            sys.path.remove(folder)


def missing_function(uses: str) -> str | None:
    """Why ``module:function`` cannot be found or called, without running the module, or None."""
    problems = function_problems(uses, None)
    return problems[0][0] if problems else None


def function_problems(uses: str, arguments: list[str] | None, folders: list[str] = ()) -> list[tuple[str, tuple]]:
    """What keeps the step's function from being called with ``arguments`` (the keys of its
    ``with``; None to check the function alone), each with where it is (``("uses",)``,
    ``("with", key)``). Read from the source, without running it, unless the module is
    already imported."""
    module, _, attribute = uses.partition(":")
    shadowed = shadows_stdlib(module)
    if shadowed and _user_module(module, folders):
        return [(shadowed, ("uses",))]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        return [(f"cannot find module {module!r}: {exc}", ("uses",))]
    if spec is None:
        return [(f"cannot find module {module!r}", ("uses",))]
    loaded = sys.modules.get(module)
    if loaded is not None and _same_file(getattr(loaded, "__file__", None), spec.origin):
        target = loaded
        for part in attribute.split("."):
            if not hasattr(target, part):
                return [(f"module {module!r} defines no {part!r}{_suggest(part, dir(target))}", ("uses",))]
            target = getattr(target, part)
        if not callable(target):
            return [(f"{uses} is a {type(target).__name__}, not a function", ("uses",))]
        return _loaded_signature_problems(uses, target, arguments)
    origin = spec.origin
    if not origin or not origin.endswith(".py"):
        return []  # a compiled or namespace module: checked when the task runs
    try:
        found = outline(origin)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as exc:
        return [(f"cannot read module {module!r}: {exc}", ("uses",))]
    top = attribute.split(".")[0]
    binding = found.bindings.get(top)
    if binding is None:
        if found.dynamic:
            return []
        return [(f"module {module!r} defines no {top!r}{_suggest(top, found.bindings)}", ("uses",))]
    if "." in attribute:
        return []
    if binding.literal:
        return [(f"{uses} is {binding.literal}, not a function", ("uses",))]
    if arguments is None or not binding.function:
        return []  # a decorator may change what the function takes: checked when the task runs
    return _argument_problems(uses, list(binding.parameters), arguments)


def shadows_stdlib(module: str) -> str | None:
    """Why a user's module named like a module of the standard library cannot be used."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names:
        return (
            f"the module name {top!r} is also the name of a module of Python's standard library, "
            f"which is imported instead of it: rename {top}.py"
        )
    return None


def _user_module(module: str, folders: list[str]) -> bool:
    top = module.split(".")[0]
    return any((FilePath(f) / f"{top}.py").exists() or (FilePath(f) / top).is_dir() for f in folders)


def _loaded_signature_problems(uses: str, target, arguments: list[str] | None) -> list[tuple[str, tuple]]:
    if arguments is None:
        return []
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return []  # a builtin without a signature: the call decides
    return _argument_problems(
        uses, [(p.name, p.kind, p.default is not inspect.Parameter.empty) for p in parameters], arguments
    )


def _argument_problems(uses: str, parameters: list, given: list[str]) -> list[tuple[str, tuple]]:
    """What ``inspect.Signature.bind(**with)`` would refuse: every problem, not the first."""
    kind = inspect.Parameter
    by_keyword = [n for n, k, _ in parameters if k in (kind.POSITIONAL_OR_KEYWORD, kind.KEYWORD_ONLY)]
    problems, meant = [], set()
    positional_only = {n for n, k, _ in parameters if k is kind.POSITIONAL_ONLY}
    for key in given:
        if key in positional_only:
            meant.add(key)
            problems.append((f"{key!r} is positional-only in {uses}: a step's with gives its arguments by "
                             "keyword", ("with", key)))
    if not any(k is kind.VAR_KEYWORD for _, k, _ in parameters):
        for key in given:
            if key not in by_keyword and key not in positional_only:
                close = difflib.get_close_matches(key, by_keyword, n=1)
                meant |= set(close)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append((f"{uses} takes no argument {key!r}{hint}", ("with", key)))
    missing = [
        name for name, k, has_default in parameters
        if not has_default and k not in (kind.VAR_POSITIONAL, kind.VAR_KEYWORD)
        and name not in meant and (k is kind.POSITIONAL_ONLY or name not in given)
    ]
    if missing:
        listed = ", ".join(repr(m) for m in missing)
        problems.append((f"{uses} needs {listed}, which the step's with does not give", ("with",)))
    return problems


def _same_file(a: str | None, b: str | None) -> bool:
    """Whether a loaded module is the one the workflow's import path finds (another folder's
    module of the same name may be loaded already)."""
    if a is None or b is None:
        return a is None and b in (None, "built-in", "frozen")
    return FilePath(a).resolve() == FilePath(b).resolve()
