"""What a pod runs on Kubernetes (``fanflow exec``): one task of a step, with the local
engine's semantics.

Argo hands the pod the step's ``uses`` and its ``with`` template (still holding ``${...}``
references) and the values those references need: workflow parameters, the fan-out item,
upstream steps' output manifests, and, for a collecting reference ``${train[*]}``, the JSON
list Argo aggregates from a fanned-out task's output parameter. The pod resolves the
references with ``fanflow.spec.refs.substitute`` exactly as the engine does, runs the step
through ``fanflow.executors.worker.execute``, and writes its output manifest (small JSON with
artifact references) to a file Argo reads as an output parameter.

A failed task writes ``{"$failed": error, "task": name}`` instead, so that a fan-in that
tolerates failures (a quorum) can tell failed branches from succeeded ones whatever Argo
collects; no step output can look like that, because output keys starting with '$' are
reserved.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanflow.engine.naming import labels
from fanflow.engine.plan import convert
from fanflow.engine.quorum import Tally
from fanflow.engine.resolve import ResolveError, descend
from fanflow.exporters import kserve
from fanflow.exporters.kube import RUN_LABEL, STEP_LABEL, dns_name, label_value, resources, safe_json
from fanflow.spec.refs import ITEM, PARAMS, Ref, RefSyntaxError, substitute, whole_ref
from fanflow.vocab.manifest import FAILED_KEY, is_failure

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class PodUsageError(ValueError):
    """Arguments the pod cannot run with: a bug in the manifest, not in the step."""


@dataclass
class PodTask:
    step: str
    uses: str
    with_: dict[str, Any]
    artifacts: str
    params: dict[str, Any] = field(default_factory=dict)
    item: dict[str, Any] | None = None
    inputs: dict[str, Any] = field(default_factory=dict)  # step -> its output manifest
    collected: dict[str, list] = field(default_factory=dict)  # step -> its branches' manifests
    run_id: str = "pod"
    attempt: int = 1
    cpus: float = 1.0
    gpus: int = 0
    memory: int | None = None
    kind: str = "task"
    import_paths: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The task's name as the engine gives it, e.g. ``train[model=cnn]``."""
        if self.item is None:
            return self.step
        label = ",".join(f"{axis}={labels([value])[0]}" for axis, value in self.item.items())
        return f"{self.step}[{label}]"

    def lookup(self, ref: Ref) -> Any:
        if ref.root == PARAMS:
            return descend(self.params, ref.path, ref)
        if ref.root == ITEM:
            if self.item is None:
                raise PodUsageError(f"{ref} needs --item")
            return descend(self.item, ref.path, ref)
        if ref.collect:
            if ref.root not in self.collected:
                raise PodUsageError(f"{ref} needs --collect {ref.root}=JSON")
            return [descend(output, ref.path, ref) for output in succeeded(self.collected[ref.root])]
        if ref.root not in self.inputs:
            raise PodUsageError(f"{ref} needs --input {ref.root}=JSON")
        return descend(self.inputs[ref.root], ref.path, ref)

    def resolve(self) -> dict[str, Any]:
        return substitute(self.with_, self.lookup)


def succeeded(outputs: list) -> list:
    """The outputs of the branches that succeeded, in declared order."""
    return [output for output in outputs if not is_failure(output)]


def _write(path: str | os.PathLike, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


def write_lists(output: Any, lists: dict[str, str], step: str) -> None:
    """Write the lists later steps fan out over (``${step}`` or a path inside it) as JSON
    lists of JSON texts: Argo's ``withParam`` then hands each element to ``{{item}}`` as
    text that decodes to exactly that element, strings and numbers alike."""
    for text, path in lists.items():
        ref = whole_ref(text)
        if ref is None or ref.root != step or ref.collect:
            raise PodUsageError(f"--list-output {text}: expected a reference into ${{{step}}}")
        values = descend(output, ref.path, ref)
        if not isinstance(values, list):
            raise ResolveError(
                f"a later step fans out over {ref}, which is a {type(values).__name__}, not a list"
            )
        _write(path, json.dumps([safe_json(value) for value in values]))


def run_task(task: PodTask, output: str, lists: dict[str, str] | None = None) -> int:
    """Run one task; write its output manifest (or the failure) to ``output``. Returns the
    exit code: 0 succeeded, 1 the task failed (the error on stderr)."""
    from fanflow.executors.base import TaskSpec
    from fanflow.executors.worker import execute

    try:
        inputs = task.resolve()
    except ResolveError as exc:
        return _fail(task, output, str(exc))
    spec = TaskSpec(
        run_id=task.run_id,
        task=task.name,
        step=task.step,
        attempt=task.attempt,
        uses=task.uses,
        inputs=inputs,
        artifacts=task.artifacts,
        cpus=task.cpus,
        gpus=task.gpus,
        memory=task.memory,
        import_paths=task.import_paths or [os.getcwd()],
        scratch=tempfile.mkdtemp(prefix="fanflow-scratch-"),
    )
    result = execute(spec, worker=os.environ.get("HOSTNAME", ""))
    if result.status != "succeeded":
        if result.traceback:
            print(result.traceback, file=sys.stderr, end="")
        return _fail(task, output, result.error or result.status)
    try:
        write_lists(result.output, lists or {}, task.step)
    except ResolveError as exc:
        return _fail(task, output, str(exc))
    _write(output, safe_json(result.output))
    print(f"fanflow: {task.name} succeeded", file=sys.stderr)
    return EXIT_OK


def _fail(task: PodTask, output: str, error: str) -> int:
    _write(output, safe_json({FAILED_KEY: error, "task": task.name}))
    print(f"fanflow: {task.name} failed: {error}", file=sys.stderr)
    return EXIT_FAILED


def render_service(
    task: PodTask,
    output: str,
    resource: str,
    *,
    image: str,
    namespace: str | None,
    secret: str | None = None,
    lists: dict[str, str] | None = None,
) -> int:
    """For a service step: write the InferenceService that serves it (``resource``, created
    by Argo once this pod is done) and its endpoint ``{"url", "model"}`` as the step's
    output, the same shape a local service announces."""
    try:
        inputs = task.resolve()
        name, command = kserve.server_command(task.uses, inputs, task.artifacts)
    except (ResolveError, kserve.ServiceError) as exc:
        return _fail(task, output, str(exc))
    suffix = "" if task.uses == kserve.GATEWAY and task.item is None else f"-{name}"
    service = dns_name(f"{task.run_id}-{task.step}{suffix}", 45)
    manifest = kserve.inference_service(
        service,
        image,
        command,
        labels={RUN_LABEL: label_value(task.run_id), STEP_LABEL: label_value(task.step)},
        annotations={"fanflow.dev/task": task.name},
        requests=resources(task.cpus, task.gpus, task.memory),
        secret=secret,
    )
    endpoint = {"url": kserve.predictor_url(service, namespace), "model": name}
    try:
        write_lists(endpoint, lists or {}, task.step)
    except ResolveError as exc:
        return _fail(task, output, str(exc))
    _write(resource, safe_json(manifest))
    _write(output, safe_json(endpoint))
    print(f"fanflow: {task.name} will be served by InferenceService {service}", file=sys.stderr)
    return EXIT_OK


def check_quorum(
    step: str, min_success: int | float, collected: dict[str, list], widths: dict[str, int]
) -> str:
    """Count the succeeded branches a quorum fan-in collects, as the engine does. Returns
    the verdict; raises QuorumNotMet when too few succeeded."""
    tally = Tally(list(collected))
    tally.total = sum(widths.get(source, len(outputs)) for source, outputs in collected.items())
    tally.ok = sum(len(succeeded(outputs)) for outputs in collected.values())
    tally.failures = [
        f"{output.get('task', source)}: {output[FAILED_KEY]}"
        for source, outputs in collected.items()
        for output in outputs
        if is_failure(output)
    ]
    if not tally.met(min_success):
        raise QuorumNotMet(f"{step}: quorum not met: {tally.describe(min_success)}")
    return f"{step}: quorum met: {tally.describe(min_success)}"


class QuorumNotMet(Exception):
    pass


# -- reading the command line's values ----------------------------------------------------


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PodUsageError(f"{what}: not JSON ({exc.msg} at {exc.pos}): {text[:80]!r}") from None


def parse_pairs(values: list[str] | None, what: str) -> dict[str, str]:
    pairs = {}
    for value in values or []:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise PodUsageError(f"{what} {value[:80]!r}: expected NAME=VALUE")
        pairs[key] = text
    return pairs


def parse_params(values: list[str] | None) -> dict[str, Any]:
    """``NAME:TYPE=TEXT`` → {NAME: value}, converted as ``fanflow run -p`` converts."""
    params = {}
    for key, text in parse_pairs(values, "--param").items():
        name, _, kind = key.partition(":")
        try:
            params[name] = convert(text, kind or "any")
        except ValueError as exc:
            raise PodUsageError(f"--param {name}: {exc}") from None
    return params


def parse_item(text: str | None, axis: str | None) -> dict[str, Any] | None:
    """The fan-out item: a JSON object of axis values, or one axis's value with ``axis``.
    Over a list parameter Argo hands a string item over bare (``cnn``, not ``"cnn"``), so a
    one-axis item that is not JSON is taken as that text."""
    if text is None:
        return None
    if axis:
        try:
            return {axis: json.loads(text)}
        except json.JSONDecodeError:
            return {axis: text}
    value = parse_json(text, "--item")
    if not isinstance(value, dict):
        raise PodUsageError("--item: expected a JSON object of axis values (or give --axis)")
    return value


def parse_with(text: str) -> dict[str, Any]:
    value = parse_json(text, "--with")
    if not isinstance(value, dict):
        raise PodUsageError("--with: expected a JSON object")
    try:
        substitute(value, lambda ref: None)
    except RefSyntaxError as exc:
        raise PodUsageError(f"--with: {exc}") from None
    return value


def parse_list_outputs(values: list[str] | None) -> dict[str, str]:
    lists = {}
    for value in values or []:
        ref_text, sep, path = value.rpartition("=")
        if not sep or whole_ref(ref_text) is None:
            raise PodUsageError(f"--list-output {value[:80]!r}: expected '${{step...}}=FILE'")
        lists[ref_text] = path
    return lists
