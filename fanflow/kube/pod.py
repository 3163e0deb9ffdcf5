"""What a pod runs on Kubernetes (``fanflow exec``): the run's first task, then one task of a
step each, with the local engine's rules.

Argo hands a pod only the run's name, its step and, in a fan-out, the branch's number. The
pod reads everything else from the run's records in the artifact store (``records``): the
workflow and its parameters, and the outputs of the tasks before it. It expands fan-outs
with ``fanflow.engine.naming`` (so a branch has the name it has locally), resolves its
inputs with ``fanflow.engine.resolve`` and ``fanflow.spec.refs``, counts a quorum with
``fanflow.engine.quorum``, and runs the step with ``fanflow.executors.worker``, as every
backend does. Values never pass through Argo's parameters, so Argo never re-encodes them.

A pod also writes the decisions Argo needs from it, as small files Argo reads as output
parameters: how many branches a later fan-out has (``--width``) and whether a later step's
condition holds (``--verdict``). Each is decided by the first pod that knows the values it
depends on (the run's first task for parameters).

Exit codes: 0 the task succeeded (or had nothing to do), 1 it failed, 3 it failed in a way a
retry cannot change (the workflow's retry expression does not retry it, as locally).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanflow.engine.naming import branches
from fanflow.engine.plan import resolve_params
from fanflow.engine.quorum import Tally
from fanflow.engine.resolve import ResolveError, descend, fan_out_axes
from fanflow.kube import kserve
from fanflow.kube.manifests import RUN_LABEL, STEP_LABEL, argo_json, param_text, resources
from fanflow.kube.names import dns_name, label_value
from fanflow.kube.records import FAILED, SUCCEEDED, RunRecords
from fanflow.spec import conditions, graph
from fanflow.spec.errors import SpecError
from fanflow.spec.model import Step, Workflow
from fanflow.spec.refs import ITEM, PARAMS, Ref, substitute
from fanflow.spec.subflows import OUTPUTS_FUNCTION

EXIT_OK, EXIT_FAILED, EXIT_FINAL = 0, 1, 3
NO_RECORD = "left no record (killed, or out of time?)"


class PodUsageError(ValueError):
    """Arguments the pod cannot run with: a bug in the manifest, not in the step."""


class TaskFailed(Exception):
    """The task fails with this error; ``final``: no retry can change that."""

    def __init__(self, error: str, *, final: bool = True):
        super().__init__(error)
        self.final = final


@dataclass
class Decisions:
    """The files a pod writes for Argo: later steps' widths and verdicts, by step."""

    widths: dict[str, str] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)


class RunView:
    """The run as a pod sees it: the recorded workflow, parameters and task records, read
    through the engine's rules."""

    def __init__(self, records: RunRecords):
        self.records = records
        self.workflow, self.params = records.run()
        self._branches: dict[str, list[tuple[str, dict | None]]] = {}

    def step(self, name: str) -> Step:
        if name not in self.workflow.steps:
            raise PodUsageError(f"--step {name!r}: the run's workflow has no such step")
        return self.workflow.steps[name]

    def branches(self, step: str) -> list[tuple[str, dict[str, Any] | None]]:
        """(task name, item) of every branch of ``step``, named as the engine names them."""
        if step not in self._branches:
            fan_out = self.step(step).fan_out
            if not fan_out:
                self._branches[step] = [(step, None)]
            else:
                axes = fan_out_axes(fan_out, lambda ref: self.lookup(ref, None))
                self._branches[step] = branches(step, axes)
        return self._branches[step]

    def outcomes(self, step: str) -> list[tuple[str, dict[str, Any] | None]]:
        """(task name, record or None) of every branch of ``step``, in declared order."""
        names = [name for name, _ in self.branches(step)]
        found = self.records.tasks(names)
        return [(name, found[name]) for name in names]

    def lookup(self, ref: Ref, item: dict[str, Any] | None) -> Any:
        """A reference's value, as the engine's scheduler looks it up."""
        if ref.root == PARAMS:
            return descend(self.params, ref.path, ref)
        if ref.root == ITEM:
            return descend(item, ref.path, ref)
        if ref.collect:
            outputs = [r["output"] for _, r in self.outcomes(ref.root) if r and r["state"] == SUCCEEDED]
            return [descend(output, ref.path, ref) for output in outputs]
        name = self.branches(ref.root)[0][0]
        record = self.records.task(name)
        if record is None or record["state"] != SUCCEEDED:
            raise ResolveError(f"{ref}: {ref.root} has no output")
        return descend(record["output"], ref.path, ref)

    def quorum(self, step: str) -> Tally:
        """What the branches ``step`` collects came to, as the engine counts a quorum."""
        tally = Tally(graph.fans_in(self.workflow, step))
        for source in tally.sources:
            for name, record in self.outcomes(source):
                tally.total += 1
                if record is not None and record["state"] == SUCCEEDED:
                    tally.ok += 1
                    continue
                tally.lost += 1
                tally.failures.append(f"{name}: {record['error'] if record else NO_RECORD}")
        return tally

    def condition(self, step: str) -> bool:
        return conditions.evaluate(self.step(step).when, lambda ref: self.lookup(ref, None))


# -- the run's first task -------------------------------------------------------------------


def begin(records: RunRecords, workflow: Workflow, texts: dict[str, str], decisions: Decisions) -> int:
    """Record the workflow and its parameters (the texts Argo was given, converted to their
    declared types as ``fanflow run -p`` converts them; a text equal to the exported default
    stands for the default itself), then decide what depends on parameters only."""
    overrides = {}
    for name, text in texts.items():
        param = workflow.params.get(name)
        if param is None:
            raise PodUsageError(f"--params: the workflow has no parameter {name!r}")
        if param.required or text != param_text(param.default, param.type):
            overrides[name] = text
    try:
        params = resolve_params(workflow, overrides)
    except SpecError as exc:
        _say_failed("the run's parameters", "; ".join(str(i) for i in exc.issues))
        return EXIT_FINAL
    records.save_run(workflow, params)
    _decide(RunView(records), decisions)
    print(f"fanflow: run {records.run_id} recorded in {records.url}", file=sys.stderr)
    return EXIT_OK


# -- one task -------------------------------------------------------------------------------


@dataclass
class PodTask:
    """One branch of a step in a run, and where its record goes."""

    view: RunView
    step: str
    branch: int | None
    attempt: int = 1
    name: str = ""
    item: dict[str, Any] | None = None

    @classmethod
    def open(cls, records: RunRecords, step: str, branch: int | None, attempt: int) -> PodTask:
        task = cls(RunView(records), step, branch, attempt, name=step)
        task.view.step(step)
        return task

    def prepare(self) -> dict[str, Any] | None:
        """Check the step's quorum and condition, find this branch's name and item, and
        resolve its inputs (None: the fan-out is empty, nothing to run), in the engine's
        order. Raises TaskFailed; until the branch is known, the task is named after the
        step, as the engine names a step that fails before it expands."""
        spec = self.view.step(self.step)
        if spec.min_success is not None and graph.fans_in(self.view.workflow, self.step):
            tally = self.view.quorum(self.step)
            if not tally.met(spec.min_success):
                raise TaskFailed(f"quorum not met: {tally.describe(spec.min_success)}")
        try:
            holds = self.view.condition(self.step)
            found = self.view.branches(self.step)
        except Exception as exc:  # a condition or a fan-out that cannot be evaluated fails the step
            raise TaskFailed(str(exc)) from None
        if not holds:
            raise TaskFailed(f"when: {spec.when} is false, yet the step was started")
        if spec.fan_out and self.branch is None:
            raise PodUsageError(f"step {self.step!r} fans out: give --branch")
        index = self.branch or 0
        if not found and index == 0:
            return None
        if index >= len(found):
            raise PodUsageError(f"--branch {index}: step {self.step!r} has {len(found)} branches")
        self.name, self.item = found[index]
        try:
            return substitute(spec.with_, lambda ref: self.view.lookup(ref, self.item))
        except ResolveError as exc:
            raise TaskFailed(str(exc)) from None

    def succeed(self, inputs: dict[str, Any], output: Any, decisions: Decisions) -> int:
        self.view.records.save_task(
            self.name,
            {
                "step": self.step,
                "attempt": self.attempt,
                "state": SUCCEEDED,
                "inputs": inputs,
                "output": output,
            },
        )
        _decide(self.view, decisions)
        print(f"fanflow: {self.name} succeeded", file=sys.stderr)
        return EXIT_OK

    def fail(self, error: TaskFailed) -> int:
        self.view.records.save_task(
            self.name, {"step": self.step, "attempt": self.attempt, "state": FAILED, "error": str(error)}
        )
        _say_failed(self.name, str(error))
        return EXIT_FINAL if error.final else EXIT_FAILED


def run_task(task: PodTask, decisions: Decisions, import_paths: list[str] | None = None) -> int:
    """Run one task with the engine's rules; its record goes to the run's store."""
    from fanflow.executors.base import TaskSpec
    from fanflow.executors.worker import execute

    try:
        inputs = task.prepare()
    except TaskFailed as exc:
        return task.fail(exc)
    if inputs is None:
        print(f"fanflow: {task.step} fans out over an empty list: nothing to run", file=sys.stderr)
        return EXIT_OK
    step = task.view.step(task.step)
    if step.uses == OUTPUTS_FUNCTION:
        # A sub-workflow's outputs: references passed through, nothing to run (as the engine).
        return task.succeed(inputs, inputs["outputs"], decisions)
    res = step.effective_resources
    spec = TaskSpec(
        run_id=task.view.records.run_id,
        task=task.name,
        step=task.step,
        attempt=task.attempt,
        uses=step.uses,
        inputs=inputs,
        artifacts=task.view.records.url,
        cpus=res.cpus,
        gpus=res.gpus,
        memory=res.memory,
        import_paths=import_paths or [os.getcwd()],
        scratch=tempfile.mkdtemp(prefix="fanflow-scratch-"),
    )
    result = execute(spec, worker=os.environ.get("HOSTNAME", ""))
    if result.status != "succeeded":
        if result.traceback:
            print(result.traceback, file=sys.stderr, end="")
        return task.fail(TaskFailed(result.error or result.status, final=not result.retryable))
    return task.succeed(inputs, result.output, decisions)


def render_service(
    task: PodTask,
    decisions: Decisions,
    resource: str | os.PathLike,
    *,
    image: str,
    namespace: str | None,
    secret: str | None = None,
) -> int:
    """For a service step: write the InferenceService that serves this branch (``resource``,
    created by Argo once this pod is done) and record its endpoint ``{"url", "model"}`` as
    the task's output, the same shape a local service announces."""
    try:
        inputs = task.prepare()
        if inputs is None:
            raise TaskFailed("a service fans out over an empty list")
        server = kserve.server_command(task.view.step(task.step).uses, inputs, task.view.records.url)
    except kserve.ServiceError as exc:
        return task.fail(TaskFailed(str(exc)))
    except TaskFailed as exc:
        return task.fail(exc)
    run = task.view.records.run_id
    suffix = "" if task.branch is None else f"-{task.branch}"
    service = dns_name(f"{run}-{task.step}{suffix}", 45)
    res = task.view.step(task.step).effective_resources
    manifest = kserve.inference_service(
        service,
        image,
        server,
        labels={RUN_LABEL: label_value(run), STEP_LABEL: label_value(task.step)},
        annotations={"fanflow.dev/task": task.name},
        requests=resources(res.cpus, res.gpus, res.memory),
        secret=secret,
    )
    write_text(resource, argo_json(manifest))
    endpoint = {"url": kserve.predictor_url(service, namespace), "model": server.name}
    print(f"fanflow: {task.name} will be served by InferenceService {service}", file=sys.stderr)
    return task.succeed(inputs, endpoint, decisions)


# -- decisions for Argo ---------------------------------------------------------------------


def _decide(view: RunView, decisions: Decisions) -> None:
    """Write each width and verdict this pod was asked for. A width is at least 1: a fan-out
    that is empty, or that cannot be expanded, still runs one pod, which records nothing or
    fails with the engine's error; a verdict that cannot be evaluated is ``true``, so that
    the step's own pod fails with the error."""
    for step, path in decisions.widths.items():
        try:
            width = len(view.branches(step))
        except Exception:  # the branch's pod reports it
            width = 1
        write_text(path, str(max(width, 1)))
    for step, path in decisions.verdicts.items():
        write_text(path, "true" if _holds(view, step) else "false")


def _holds(view: RunView, step: str) -> bool:
    try:
        return view.condition(step)
    except Exception:  # the step's pod reports it
        return True


def write_text(path: str | os.PathLike, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


def _say_failed(what: str, error: str) -> int:
    print(f"fanflow: {what} failed: {error}", file=sys.stderr)
    return EXIT_FAILED


# -- reading the command line's values ------------------------------------------------------


def parse_pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """``NAME=VALUE`` options as a dict."""
    pairs = {}
    for value in values or []:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise PodUsageError(f"{what} {value[:80]!r}: expected NAME=VALUE")
        pairs[key] = text
    return pairs


def read_params(folder: str | os.PathLike | None) -> dict[str, str]:
    """The parameters' texts, one file per parameter named after it (Argo writes them)."""
    if folder is None:
        return {}
    path = Path(folder)
    if not path.is_dir():
        raise PodUsageError(f"--params {folder}: not a folder")
    return {f.name: f.read_text(encoding="utf-8") for f in sorted(path.iterdir()) if f.is_file()}


def load_workflow_file(path: str | os.PathLike) -> Workflow:
    """The workflow a run records: a JSON spec (what the exported manifest holds) or a
    workflow file (.yaml, .py) when running a pod by hand."""
    target = Path(path)
    if target.suffix == ".json":
        try:
            return Workflow.model_validate(json.loads(target.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise PodUsageError(f"--workflow {path}: {exc}") from None
    from fanflow.spec.loader import load_workflow

    return load_workflow(target)
