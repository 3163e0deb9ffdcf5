"""The Argo plan of a workflow: what each step becomes on Argo Workflows, decided before
anything is rendered, and what does not translate, refused with an error naming the step
and the field (every problem at once).

The shape every workflow takes: a first task (``begin``) records the workflow and its
parameters in the run's artifact store; each step is a DAG task whose pods read their
inputs from there (``fanflow.kube.pod``); a fan-out loops ``withSequence`` over its branch
numbers, the count decided by the first pod that knows it. ``STEP_FIELDS`` and
``WORKFLOW_FIELDS`` record what becomes of every field of the spec.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from fanflow.engine.core import MAX_BACKOFF
from fanflow.kube import conditions, kserve, versions
from fanflow.kube.manifests import param_text
from fanflow.kube.names import ARGO_NAME_LIMIT, LABEL_LIMIT, argo_name
from fanflow.spec import graph
from fanflow.spec.errors import SpecError, SpecIssue
from fanflow.spec.model import Step, Workflow
from fanflow.vocab.imports import shipped_digest

KUBE_READY_TIMEOUT = 600.0  # a first image pull; Knative's own progress deadline
SUFFIXES = ("-loop", "-render", "-create")  # the longest names Argo gets from a step's task

# What becomes of each field of a step on Argo ("refused ..." names when the export stops).
STEP_FIELDS: dict[str, str] = {
    "uses": "the pod runs `fanflow exec`, which imports it as the engine does; a service must use "
    "fanflow's model server or gateway (refused otherwise); refused: a step defined in a notebook (its "
    "code is not in the image)",
    "with_": "recorded with the workflow; the pod resolves its references from the run's records as the "
    "engine does; refused: a key a service's server does not take, a port a service cannot listen on",
    "fan_out": "withSequence over the branch numbers; the pods expand the fan-out with the engine's "
    "naming; refused: an axis from a collecting reference, or from steps that run independently",
    "needs": "depends",
    "when": "Argo `when` over verdicts: the first pod that knows the condition's values evaluates it with "
    "the engine's evaluator; refused: a condition on a fan-out's or service's outputs, or on steps that "
    "run independently",
    "kind": "task: a container template; service: a KServe InferenceService rendered by a pod, created by "
    "a resource template and deleted by the exit handler",
    "executor": "no effect: every task is a process in its own pod",
    "retries": "retryStrategy.limit (retryPolicy Always, no retry after a failure a retry cannot change); "
    "refused on services",
    "retry_backoff": "retryStrategy.backoff: duration and factor 2, and the engine's cap on a wait on Argo "
    "3.7 and later; refused before 3.7 where a wait would exceed the cap",
    "timeout": "activeDeadlineSeconds (per attempt); refused on services",
    "parallelism": "parallelism of a steps template that runs the loop; refused on services",
    "resources": "container requests (cpu, memory) and the nvidia.com/gpu limit",
    "min_success": "the fan-in depends on its branches having finished however they ended, and its pod "
    "counts the quorum as the engine does; refused over services",
    "wait": "all: translated; quorum: refused (Argo starts a task only once its dependencies finished)",
    "on_failure": "the DAG's failFast; refused when it differs from the workflow's policy",
    "cache": "not translated: fanflow's cache lives in its run store; every task runs on Argo",
    "restarts": "not translated: Kubernetes restarts a crashed server without a limit",
    "ready_timeout": "activeDeadlineSeconds of the template that waits for the InferenceService "
    "(600 s unless set: a first image pull)",
    "description": "the template's fanflow.dev/description annotation",
}
WORKFLOW_FIELDS: dict[str, str] = {
    "name": "metadata.generateName (a Workflow) or metadata.name (a WorkflowTemplate)",
    "description": "the workflows.argoproj.io/description annotation",
    "version": "the fanflow.dev/version label",
    "params": "spec.arguments.parameters (default as value, choices as enum); required ones have no value",
    "steps": "one DAG task per step, after the task that records the run",
    "presets": "not translated: recorded with the workflow; `export argo --preset NAME` writes a preset's "
    "values as the parameters' defaults",
    "parallelism": "spec.parallelism",
    "on_failure": "the DAG's failFast (continue: failFast false)",
    "outputs": "not translated: what a parent workflow takes from this one (a sub-workflow is part of "
    "its parent's steps by the time it is exported)",
    "source": "not exported: where the file came from",
    "import_paths": "not exported: folders on this machine; the image must make the step modules importable",
    "code": "not exported: the source of steps defined in a notebook, whose uses the export refuses",
}


class ExportOptionError(ValueError):
    """An option of the export that cannot work (e.g. a local artifact folder)."""


@dataclass
class Options:
    image: str
    artifacts: str
    namespace: str | None = None
    template: bool = False
    keep_services: bool = False
    secret: str | None = None
    service_account: str | None = None
    argo_version: tuple[int, int] = versions.parse(versions.OLDEST)


@dataclass
class StepPlan:
    name: str  # the fanflow step
    task: str  # its Argo task, and the name of its template
    step: Step
    depends: str
    when: str | None = None
    width: str | None = None  # a fan-out's branch count: a number, or an output of an earlier task
    widths: list[str] = field(default_factory=list)  # steps whose width this step's pod decides
    verdicts: list[str] = field(default_factory=list)  # steps whose condition its pod decides

    @property
    def service(self) -> bool:
        return self.step.kind == "service"

    @property
    def loop(self) -> bool:
        """Whether a steps template ``<task>-loop`` runs the fan-out, to hold its parallelism."""
        return bool(self.step.parallelism and self.step.fan_out and not self.service)

    @property
    def templates(self) -> list[str]:
        """The names of the templates the step becomes."""
        if self.service:
            return [self.task, f"{self.task}-render", f"{self.task}-create"]
        return [self.task, f"{self.task}-loop"] if self.loop else [self.task]


@dataclass
class ArgoPlan:
    workflow: Workflow
    options: Options
    begin: str  # the Argo task that records the run
    steps: dict[str, StepPlan]
    widths: list[str] = field(default_factory=list)  # decided by the first task
    verdicts: list[str] = field(default_factory=list)

    def task(self, step: str) -> str:
        return self.begin if step == conditions.BEGIN else self.steps[step].task


def check_options(options: Options) -> None:
    if not options.image:
        raise ExportOptionError("--image: name the container image that has fanflow installed")
    url = options.artifacts
    if "://" not in url or url.startswith("file://"):
        raise ExportOptionError(
            f"--artifacts {url!r}: pods share no folder; give an object store URL such as s3://bucket/fanflow"
        )
    if "{{" in url or "$(" in url or "$$" in url:
        raise ExportOptionError(
            f"--artifacts {url!r}: Argo or Kubernetes would rewrite '{{{{' and '$(' in it"
        )


def plan(workflow: Workflow, options: Options) -> ArgoPlan:
    """Decide what every step becomes; a SpecError names every step and field that does not
    translate."""
    check_options(options)
    planner = _Planner(workflow, options)
    result = planner.build()
    if planner.issues:
        raise SpecError(planner.issues)
    return result


class _Planner:
    def __init__(self, workflow: Workflow, options: Options):
        self.wf = workflow
        self.options = options
        self.issues: list[SpecIssue] = []

    def refuse(self, step: str | None, field_name: str, message: str) -> None:
        where = f"steps.{step}.{field_name}" if step else field_name
        self.issues.append(
            SpecIssue(f"does not translate to Argo: {message}", field=where, file=self.wf.source)
        )

    def build(self) -> ArgoPlan:
        tasks = self._names()
        begin = free_name("begin", set(tasks.values()))
        result = ArgoPlan(self.wf, self.options, begin, {})
        for name, step in self.wf.steps.items():
            result.steps[name] = StepPlan(name, tasks[name], step, depends="")
        for name, step_plan in result.steps.items():
            step_plan.depends = conditions.depends(self.wf, name, result.task)
        verdicts: dict[str, str | None] = {}
        for name, step in self.wf.steps.items():
            self._check_step(name, step)
            self._plan_width(result, name)
            verdicts[name] = self._plan_verdict(result, name)
        for name, step_plan in result.steps.items():
            step_plan.when = conditions.when(self.wf, name, verdicts.get)
        self._check_templates(result)
        self._check_params()
        return result

    def _check_templates(self, result: ArgoPlan) -> None:
        owner: dict[str, str] = {}
        for name, step_plan in result.steps.items():
            for template in step_plan.templates:
                if template in owner and owner[template] != name:
                    self.refuse(
                        name,
                        "name",
                        f"its template {template!r} is also {owner[template]!r}'s; rename one of the steps",
                    )
                owner.setdefault(template, name)

    # -- names --------------------------------------------------------------------------
    def _names(self) -> dict[str, str]:
        tasks: dict[str, str] = {}
        seen: dict[str, str] = {}
        for name in self.wf.steps:
            task = argo_name(name)
            if task in seen:
                self.refuse(
                    name,
                    "name",
                    f"{name!r} and {seen[task]!r} are both {task!r} on Argo "
                    "(lower case, '-' for '_' and '/')",
                )
            seen[task] = name
            tasks[name] = task
            if len(task) + max(map(len, SUFFIXES)) > ARGO_NAME_LIMIT:
                self.refuse(
                    name,
                    "name",
                    f"Argo names tasks and templates with at most {ARGO_NAME_LIMIT} "
                    f"characters; {task!r} and its {'/'.join(SUFFIXES)} templates need "
                    f"{len(task) + max(map(len, SUFFIXES))}",
                )
            if len(name) > LABEL_LIMIT:
                self.refuse(
                    name,
                    "name",
                    f"Kubernetes label values hold at most {LABEL_LIMIT} characters, "
                    f"and the name has {len(name)} (its pods' fanflow.dev/step label)",
                )
        return tasks

    # -- what each step's fields become -------------------------------------------------
    def _check_step(self, name: str, step: Step) -> None:
        if shipped_digest(step.uses):
            self.refuse(
                name,
                "uses",
                "the step is defined in a notebook, so its code is in this machine's artifact store, "
                "not in the image; define it in a module the image holds",
            )
        if step.wait == "quorum":
            self.refuse(
                name,
                "wait",
                "wait: quorum starts a fan-in before every branch finished; Argo "
                "starts a task only once its dependencies finished (use wait: all)",
            )
        if step.min_success is not None:
            for source in graph.fans_in(self.wf, name):
                if self.wf.steps[source].kind == "service":
                    self.refuse(name, "min_success", f"a quorum over the services of {source!r}")
        policy = self.wf.policy(name)
        if policy != self.wf.on_failure:
            self.refuse(
                name,
                "on_failure",
                f"on_failure: {policy} differs from the workflow's "
                f"{self.wf.on_failure}; Argo's failFast holds for the whole DAG",
            )
        if step.retries:
            self._check_backoff(name, step)
        if step.kind == "service":
            self._check_service(name, step)

    def _check_backoff(self, name: str, step: Step) -> None:
        longest = step.retry_backoff * 2 ** (step.retries - 1)
        if longest > MAX_BACKOFF and not versions.has_backoff_cap(self.options.argo_version):
            self.refuse(
                name,
                "retry_backoff",
                f"retries: {step.retries} with retry_backoff {step.retry_backoff:g}s waits up to "
                f"{longest:g}s before the last attempt, where fanflow waits at most {MAX_BACKOFF:g}s; "
                "Argo before 3.7 cannot cap a wait (export with --argo-version 3.7 or later, or lower "
                "retries or retry_backoff)",
            )

    def _check_service(self, name: str, step: Step) -> None:
        if step.uses not in kserve.SERVER_OPTIONS:
            self.refuse(
                name,
                "uses",
                f"a service runs on KServe only as fanflow's model server "
                f"({kserve.MODEL_SERVER}) or gateway ({kserve.GATEWAY}), not {step.uses}",
            )
            return
        unknown = sorted(set(step.with_) - set(kserve.SERVER_OPTIONS[step.uses]))
        if unknown:
            self.refuse(name, "with", f"{step.uses} takes no {', '.join(unknown)}")
        port = step.with_.get("port")
        if port and not (isinstance(port, str) and "${" in port):
            problem = kserve.port_problem(port)
            if problem:
                self.refuse(name, "with.port", problem)
        for field_name, reason in (
            ("retries", "KServe restarts a failing server itself"),
            ("timeout", "a server runs until the workflow ends"),
            ("parallelism", "every server of a fan-out starts at once"),
        ):
            if getattr(step, field_name) not in (None, 0):
                self.refuse(name, field_name, f"{field_name} on a service ({reason}); remove it")

    def _check_params(self) -> None:
        for name, param in self.wf.params.items():
            texts = [] if param.required else [param_text(param.default, param.type)]
            texts += [param_text(c, param.type) for c in param.choices or []]
            if any("{{" in text for text in texts):
                self.refuse(None, f"params.{name}", "a value holding '{{', which Argo would substitute")

    # -- decisions pods make for Argo ---------------------------------------------------
    def _plan_width(self, result: ArgoPlan, name: str) -> None:
        step = self.wf.steps[name]
        if not step.fan_out:
            return
        if all(isinstance(values, list) for values in step.fan_out.values()):
            result.steps[name].width = str(math.prod(len(values) for values in step.fan_out.values()))
            return
        refs = [ref for ref, where in graph.step_refs(step) if where[0] == "fan_out"]
        if any(ref.collect for ref in refs):
            self.refuse(
                name,
                "fan_out",
                "an axis from a collecting reference; return the list from a step that collects it",
            )
            return
        decider = self._decider(name, "fan_out", refs)
        if decider is None:
            return
        self._decisions(result, decider).widths.append(name)
        result.steps[
            name
        ].width = f"{{{{tasks.{result.task(decider)}.outputs.parameters.{width_parameter(result.steps[name].task)}}}}}"

    def _plan_verdict(self, result: ArgoPlan, name: str) -> str | None:
        """The Argo text of the step's verdict: ``false`` for ``when: false``, else the output
        parameter of the pod that decides it."""
        step = self.wf.steps[name]
        if step.when is False:
            return "false"
        if not conditions.has_condition(step):
            return None
        refs = [ref for ref, where in graph.step_refs(step) if where[0] == "when"]
        if any(ref.collect for ref in refs):
            self.refuse(
                name,
                "when",
                "a condition on the outputs of every branch of a fan-out is known only "
                "once they all finished; compute it in a step that collects them",
            )
            return None
        decider = self._decider(name, "when", refs)
        if decider is None:
            return None
        self._decisions(result, decider).verdicts.append(name)
        return f"{{{{tasks.{result.task(decider)}.outputs.parameters.{verdict_parameter(result.steps[name].task)}}}}}"

    def _decider(self, name: str, field_name: str, refs) -> str | None:
        """The first step whose pod knows every value ``refs`` need (BEGIN for parameters
        only): one of the referenced steps that runs after all the others."""
        sources = [s for s in self.wf.steps if s in {ref.root for ref in refs if ref.is_step}]
        if not sources:
            return conditions.BEGIN
        for source in sources:
            kind = "fans out" if self.wf.steps[source].fan_out else "is a service"
            if self.wf.steps[source].fan_out or self.wf.steps[source].kind == "service":
                self.refuse(
                    name,
                    field_name,
                    f"it depends on the outputs of {source!r}, which {kind}; "
                    "no single pod knows them (compute the value in a step)",
                )
                return None
        for source in sources:
            if set(sources) <= graph.closure(self.wf, {source}):
                return source
        self.refuse(
            name,
            field_name,
            f"it depends on the outputs of {', '.join(map(repr, sources))}, which "
            "run independently; no single pod knows them all (make one need the others)",
        )
        return None

    @staticmethod
    def _decisions(result: ArgoPlan, decider: str) -> ArgoPlan | StepPlan:
        return result if decider == conditions.BEGIN else result.steps[decider]


def width_parameter(task: str) -> str:
    return f"width-{task}"


def verdict_parameter(task: str) -> str:
    return f"when-{task}"


def free_name(base: str, taken: set[str]) -> str:
    for suffix in itertools.count():
        name = base if suffix == 0 else f"{base}-{suffix}"
        if name not in taken:
            return name
    raise AssertionError  # pragma: no cover
