"""Translate a workflow into an Argo Workflows manifest (``fanflow export argo``), built with
Hera's models of Argo's API.

Every step runs ``fanflow exec`` in the image the user names, so a step's behaviour on
Kubernetes is the same code as locally: the pod gets the step's ``with`` template and the
values its references need, and resolves them as the engine does. Only small manifests (JSON
with artifact references) travel through Argo parameters; the data lives in the artifact
store (an object store URL every pod reaches).

What does not translate faithfully is refused with an error naming the step and the field,
rather than exported into a manifest that would behave differently. ``STEP_FIELDS`` and
``WORKFLOW_FIELDS`` record the decision for every field of the spec.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from hera.workflows import models as m

from fanflow.exporters import kserve
from fanflow.exporters.kube import (
    MANAGED_BY,
    RUN_LABEL,
    STEP_LABEL,
    argo_name,
    dns_name,
    label_value,
    ordered,
    readable_json,
    resources,
)
from fanflow.spec import conditions, graph
from fanflow.spec.errors import SpecError, SpecIssue
from fanflow.spec.model import Step, Workflow
from fanflow.spec.refs import ITEM, PARAMS, whole_ref
from fanflow.vocab.imports import shipped_digest

POD_COMMAND = ["fanflow", "exec"]
QUORUM_COMMAND = ["fanflow", "check-quorum"]
OUTPUT = "/tmp/fanflow/manifest.json"
RESOURCE = "/tmp/fanflow/resource.json"
NO_OUTPUT = '{"$failed":"the task left no output (killed, or out of time?)"}'
READY = "status.modelStatus.states.activeModelState = Loaded"
NOT_READY = "status.modelStatus.states.targetModelState = FailedToLoad"
MAX_BACKOFF = "5m"  # the engine caps each wait between attempts at 300 s

# What becomes of each field of a step on Argo ("refused ..." names when the export stops).
STEP_FIELDS: dict[str, str] = {
    "uses": "the pod runs `fanflow exec --uses`; a service must use fanflow's model server or gateway "
    "(refused otherwise); refused: a step defined in a notebook (its code is not in the image)",
    "with_": "passed as a JSON template; the pod resolves its references as the engine does; "
    "refused: a key a service's server does not take",
    "fan_out": "static lists: withItems (a grid expanded at export); one axis from a step or a list "
    "parameter: withParam; refused: a grid with a run-time axis, an axis from a collecting reference",
    "needs": "dependencies",
    "when": "Argo `when` over parameters (and the conditions of the steps it depends on); "
    "refused: conditions on step outputs, `in`, arithmetic, len(), untyped parameters",
    "kind": "task: a container template; service: a KServe InferenceService created by a resource "
    "template and deleted by the exit handler",
    "executor": "no effect: every task is a process in its own pod",
    "retries": "retryStrategy.limit (retryPolicy Always); refused on services",
    "retry_backoff": "retryStrategy.backoff: duration, factor 2, cap 5m",
    "timeout": "activeDeadlineSeconds (per attempt); refused on services",
    "parallelism": "parallelism of a steps template that runs the loop; refused on services",
    "resources": "container requests (cpu, memory) and the nvidia.com/gpu limit",
    "min_success": "continueOn failed on the branches, a check step (`fanflow check-quorum`) the fan-in "
    "depends on; refused over services",
    "wait": "all: translated; quorum: refused (Argo starts a task only once its dependencies finished)",
    "on_failure": "the DAG's failFast; refused when it differs from the workflow's policy",
    "cache": "not translated: fanflow's cache lives in its run store; every task runs on Argo",
    "restarts": "not translated: Kubernetes restarts a crashed server without a limit",
    "ready_timeout": "activeDeadlineSeconds of the template that waits for the InferenceService",
    "description": "the template's fanflow.dev/description annotation",
}
WORKFLOW_FIELDS: dict[str, str] = {
    "name": "metadata.generateName (a Workflow) or metadata.name (a WorkflowTemplate)",
    "description": "the workflows.argoproj.io/description annotation",
    "version": "the fanflow.dev/version label",
    "params": "spec.arguments.parameters (default as value, choices as enum); required ones have no value",
    "steps": "one DAG task per step (plus a check task per quorum and a create task per service)",
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
class _Source:
    """Where a dynamic fan-out's list comes from: a step's output parameter, or a workflow
    parameter holding a JSON list (``step`` is then None)."""

    step: str | None
    parameter: str


@dataclass
class _StepPlan:
    name: str  # the fanflow step
    task: str  # the Argo task and template name
    step: Step
    params: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    collects: list[str] = field(default_factory=list)
    items: list[dict] | None = None  # static fan-out
    source: _Source | None = None  # dynamic fan-out
    axis: str | None = None
    when: str | None = None
    tolerate: bool = False  # continueOn failed: every consumer takes it through a quorum


def export(
    workflow: Workflow,
    *,
    image: str,
    artifacts: str,
    namespace: str | None = None,
    template: bool = False,
    keep_services: bool = False,
    secret: str | None = None,
) -> dict[str, Any]:
    """The Workflow (or WorkflowTemplate) manifest as a plain dict. Raises SpecError naming
    every step and field that does not translate, ExportOptionError for a bad option."""
    if not image:
        raise ExportOptionError("--image: name the container image that has fanflow installed")
    if "://" not in artifacts or artifacts.startswith("file://"):
        raise ExportOptionError(
            f"--artifacts {artifacts!r}: pods share no folder; give an object store URL such as "
            "s3://bucket/fanflow"
        )
    return _Exporter(workflow, image, artifacts, namespace, template, keep_services, secret).build()


class _Exporter:
    def __init__(self, workflow, image, artifacts, namespace, template, keep_services, secret):
        self.wf: Workflow = workflow
        self.image = image
        self.artifacts = artifacts
        self.namespace = namespace
        self.template = template
        self.keep_services = keep_services
        self.secret = secret
        self.issues: list[SpecIssue] = []
        self.plans: dict[str, _StepPlan] = {}
        self.lists: dict[str, dict[str, str]] = {}  # producer step -> {reference: output parameter}
        self._whens: dict[str, list[str]] = {}

    # -- refusing -----------------------------------------------------------------------
    def refuse(self, step: str | None, field: str, message: str) -> None:
        where = f"steps.{step}.{field}" if step else field
        self.issues.append(
            SpecIssue(f"does not translate to Argo: {message}", field=where, file=self.wf.source)
        )

    # -- building -----------------------------------------------------------------------
    def build(self) -> dict[str, Any]:
        self._check_names()
        for name, step in self.wf.steps.items():
            self.plans[name] = self._plan(name, step)
        for name in self.wf.steps:
            self.plans[name].when = self._when(name)
        self._mark_tolerated()
        if self.issues:
            raise SpecError(self.issues)
        tasks: list[m.DAGTask] = []
        templates: list[m.Template] = []
        for plan in self.plans.values():
            new_tasks, new_templates = self._step(plan)
            tasks += new_tasks
            templates += new_templates
        self._check_unique([t.name for t in tasks], "task")
        entry = self._free_name("main", {t.name for t in templates})
        dag = m.Template(
            name=entry,
            dag=m.DAGTemplate(tasks=tasks, fail_fast=False if self.wf.on_failure == "continue" else None),
        )
        services = [p for p in self.plans.values() if p.step.kind == "service"]
        on_exit = None
        if services and not self.keep_services:
            on_exit = self._free_name("cleanup", {t.name for t in templates} | {entry})
            templates.append(self._cleanup(on_exit))
        self._check_unique([entry, *(t.name for t in templates)], "template")
        arguments = self._arguments()
        if self.issues:
            raise SpecError(self.issues)
        spec = m.WorkflowSpec(
            entrypoint=entry,
            arguments=arguments,
            parallelism=self.wf.parallelism,
            on_exit=on_exit,
            templates=[dag, *templates],
        )
        name = dns_name(self.wf.name, 57)
        labels = {**MANAGED_BY, "fanflow.dev/workflow": name}
        if self.wf.version:
            labels["fanflow.dev/version"] = label_value(self.wf.version)
        annotations = (
            {"workflows.argoproj.io/description": self.wf.description} if self.wf.description else None
        )
        metadata = m.ObjectMeta(
            name=name if self.template else None,
            generate_name=None if self.template else f"{name}-",
            namespace=self.namespace,
            labels=labels,
            annotations=annotations,
        )
        kind = m.WorkflowTemplate if self.template else m.Workflow
        document = kind(api_version="argoproj.io/v1alpha1", kind=kind.__name__, metadata=metadata, spec=spec)
        return ordered(document.model_dump(by_alias=True, exclude_none=True, mode="json"))

    def _check_names(self) -> None:
        seen: dict[str, str] = {}
        for name in self.wf.steps:
            task = argo_name(name)
            if task in seen:
                self.refuse(
                    name,
                    "name",
                    f"{name!r} and {seen[task]!r} are both {task!r} on Argo (its names have no '_' or '/')",
                )
            seen[task] = name

    def _check_unique(self, names: list[str], what: str) -> None:
        repeated = sorted({n for n in names if names.count(n) > 1})
        for name in repeated:
            self.issues.append(
                SpecIssue(
                    f"does not translate to Argo: two {what}s would be named {name!r}; rename the step",
                    field="steps",
                    file=self.wf.source,
                )
            )

    @staticmethod
    def _free_name(base: str, taken: set[str]) -> str:
        for suffix in itertools.count():
            name = base if suffix == 0 else f"{base}-{suffix}"
            if name not in taken:
                return name
        raise AssertionError  # pragma: no cover

    # -- planning: what each step needs, and what does not translate --------------------
    def _plan(self, name: str, step: Step) -> _StepPlan:
        plan = _StepPlan(name, argo_name(name), step)
        if shipped_digest(step.uses):
            self.refuse(name, "uses", "the step is defined in a notebook, so its code is in this machine's "
                        "artifact store, not in the image; define it in a module the image holds")
        for ref, where in graph.step_refs(step):
            if where[0] != "with":
                continue
            if ref.root == PARAMS:
                _append(plan.params, ref.path[0])
            elif ref.root != ITEM:
                _append(plan.collects if ref.collect else plan.inputs, ref.root)
        plan.inputs = [s for s in self.wf.steps if s in plan.inputs]
        plan.collects = [s for s in self.wf.steps if s in plan.collects]
        plan.params = [p for p in self.wf.params if p in plan.params]
        if step.fan_out:
            self._plan_fan_out(plan)
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
        policy = step.on_failure or self.wf.on_failure
        if policy != self.wf.on_failure:
            self.refuse(
                name,
                "on_failure",
                f"on_failure: {policy} differs from the workflow's {self.wf.on_failure}; Argo's failFast "
                "holds for the whole DAG",
            )
        if step.kind == "service":
            self._check_service(name, step)
        return plan

    def _plan_fan_out(self, plan: _StepPlan) -> None:
        axes = plan.step.fan_out or {}
        dynamic = [axis for axis, values in axes.items() if isinstance(values, str)]
        if dynamic and len(axes) > 1:
            self.refuse(
                plan.name,
                "fan_out",
                f"a grid whose axis {dynamic[0]!r} is known only at run time (withParam loops over one list); "
                "compute the grid's items in a step and fan out over them",
            )
            return
        if dynamic:
            axis = dynamic[0]
            ref = whole_ref(axes[axis])
            if ref.root == PARAMS:
                if len(ref.path) != 1:
                    self.refuse(plan.name, "fan_out",
                                f"an axis from inside a parameter ({ref}); fan out over a whole list parameter")
                    return
                # withParam over the workflow parameter's JSON list: a list given at submission
                # fans out as it does locally.
                plan.source, plan.axis = _Source(None, str(ref.path[0])), axis
                return
            if ref.collect:
                self.refuse(
                    plan.name,
                    "fan_out",
                    f"an axis from a collecting reference ({ref}); return "
                    "the list from a step that collects it",
                )
                return
            names = self.lists.setdefault(ref.root, {})
            parameter = names.get(str(ref)) or _list_parameter(ref.path, set(names.values()))
            names[str(ref)] = parameter
            plan.source, plan.axis = _Source(ref.root, parameter), axis
            return
        items = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
        for axis, values in axes.items():
            if _rewritten(values):
                self.refuse(plan.name, f"fan_out.{axis}", _REWRITTEN)
        plan.items = items

    def _check_service(self, name: str, step: Step) -> None:
        if step.uses not in kserve.SERVER_OPTIONS:
            self.refuse(
                name,
                "uses",
                f"a service runs on KServe only as fanflow's model server ({kserve.MODEL_SERVER}) or "
                f"gateway ({kserve.GATEWAY}), not {step.uses}",
            )
            return
        unknown = sorted(set(step.with_) - set(kserve.SERVER_OPTIONS[step.uses]))
        if unknown:
            self.refuse(name, "with", f"{step.uses} takes no {', '.join(unknown)}")
        for field_name, reason in (
            ("retries", "KServe restarts a failing server itself"),
            ("timeout", "a server runs until the workflow ends"),
            ("parallelism", "every server of a fan-out starts at once"),
        ):
            value = getattr(step, field_name)
            if value not in (None, 0):
                self.refuse(name, field_name, f"{field_name} on a service ({reason}); remove it")

    def _mark_tolerated(self) -> None:
        """A branch failure is tolerated (continueOn) only where every consumer of the step
        collects it through a quorum, as in the engine; otherwise a failure fails the run."""
        for name, plan in self.plans.items():
            if not plan.step.fan_out:
                continue
            consumers = [c for c in self.wf.steps if name in graph.upstream(self.wf, c)]
            plan.tolerate = bool(consumers) and all(
                self.wf.steps[c].min_success is not None and name in graph.fans_in(self.wf, c)
                for c in consumers
            )

    # -- when ---------------------------------------------------------------------------
    def _when(self, name: str) -> str | None:
        parts = self._conditions(name)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else " && ".join(f"({p})" for p in parts)

    def _conditions(self, name: str) -> list[str]:
        """The step's own condition and those of every step it depends on: the engine skips
        whatever depends on a skipped step, while Argo would run it."""
        if name in self._whens:
            return self._whens[name]
        self._whens[name] = []
        parts: list[str] = []
        for up in graph.upstream(self.wf, name):
            parts += [p for p in self._conditions(up) if p not in parts]
        own = self.wf.steps[name].when
        if own is False or (isinstance(own, str) and own):
            try:
                text = "false" if own is False else _Condition(self.wf).translate(own)
            except _Untranslatable as exc:
                self.refuse(name, "when", str(exc))
                text = None
            if text and text not in parts:
                parts.append(text)
        self._whens[name] = parts
        return parts

    # -- templates and tasks ------------------------------------------------------------
    def _step(self, plan: _StepPlan) -> tuple[list[m.DAGTask], list[m.Template]]:
        step = plan.step
        service = step.kind == "service"
        templates = [self._pod_template(plan)]
        arguments = self._arguments_for(plan)
        dependencies = self._dependencies(plan)
        loop = {}
        if plan.items is not None:
            loop["with_items"] = [m.Item(item) for item in plan.items]
        elif plan.source is not None:
            loop["with_param"] = self._list_ref(plan.source)
        continue_on = m.ContinueOn(failed=True, error=True) if plan.tolerate else None
        if step.parallelism and step.fan_out and not service:
            templates.append(self._loop_template(plan, arguments, loop, continue_on))
            outer = [p for p in arguments if p.name != "item"]
            if plan.source is not None:
                outer.append(m.Parameter(name="items", value=self._list_ref(plan.source)))
            main = m.DAGTask(
                name=plan.task,
                template=f"{plan.task}-loop",
                dependencies=dependencies or None,
                arguments=m.Arguments(parameters=outer) if outer else None,
                when=plan.when,
            )
        else:
            main = m.DAGTask(
                name=plan.task,
                template=plan.task,
                dependencies=dependencies or None,
                arguments=m.Arguments(parameters=arguments) if arguments else None,
                when=plan.when,
                continue_on=continue_on,
                **loop,
            )
        tasks = [main]
        if step.min_success is not None:
            check_task, check_template = self._quorum(plan)
            tasks.insert(0, check_task)
            templates.append(check_template)
        if service:
            create_task, create_template = self._create(plan)
            tasks.append(create_task)
            templates.append(create_template)
        return tasks, templates

    def _dependencies(self, plan: _StepPlan) -> list[str]:
        deps = []
        for up in graph.upstream(self.wf, plan.name):
            deps.append(self.plans[up].task)
            if self.wf.steps[up].kind == "service":
                deps.append(f"{self.plans[up].task}-create")
        if plan.step.min_success is not None:
            deps.append(f"{plan.task}-quorum")
        return deps

    def _arguments_for(self, plan: _StepPlan) -> list[m.Parameter]:
        arguments = []
        if plan.step.fan_out:
            arguments.append(m.Parameter(name="item", value="{{item}}"))
        for up in plan.inputs:
            arguments.append(m.Parameter(name=f"in-{_key(up)}", value=self._manifest_ref(up)))
        for up in plan.collects:
            arguments.append(m.Parameter(name=f"all-{_key(up)}", value=self._manifest_ref(up)))
        return arguments

    def _manifest_ref(self, step: str) -> str:
        return f"{{{{tasks.{self.plans[step].task}.outputs.parameters.manifest}}}}"

    def _list_ref(self, source: _Source) -> str:
        if source.step is None:
            return f"{{{{workflow.parameters.{source.parameter}}}}}"
        return f"{{{{tasks.{self.plans[source.step].task}.outputs.parameters.{source.parameter}}}}}"

    def _pod_template(self, plan: _StepPlan) -> m.Template:
        step = plan.step
        service = step.kind == "service"
        res = step.effective_resources
        args = [
            "--step", plan.name,
            "--uses", step.uses,
            "--with", readable_json(step.with_),
            "--artifacts", self.artifacts,
            "--run", "{{workflow.name}}",
            "--output", OUTPUT,
        ]  # fmt: skip
        for param in plan.params:
            kind = self.wf.params[param].type
            args += ["--param", f"{param}:{kind}={{{{workflow.parameters.{param}}}}}"]
        if step.fan_out:
            args += ["--item", "{{inputs.parameters.item}}"]
            if plan.axis:
                args += ["--axis", plan.axis]
        for up in plan.inputs:
            args += ["--input", f"{up}={{{{inputs.parameters.in-{_key(up)}}}}}"]
        for up in plan.collects:
            args += ["--collect", f"{up}={{{{inputs.parameters.all-{_key(up)}}}}}"]
        if step.retries:
            args += ["--retry", "{{retries}}"]
        if res.cpus != 1:
            args += ["--cpus", _number(res.cpus)]
        if res.gpus:
            args += ["--gpus", str(res.gpus)]
        if res.memory:
            args += ["--memory", str(res.memory)]
        outputs = [m.Parameter(name="manifest", value_from=m.ValueFrom(path=OUTPUT, default=NO_OUTPUT))]
        for ref, parameter in self.lists.get(plan.name, {}).items():
            path = f"/tmp/fanflow/{parameter}.json"
            args += ["--list-output", f"{ref}={path}"]
            outputs.append(m.Parameter(name=parameter, value_from=m.ValueFrom(path=path, default="[]")))
        if service:
            args += ["--service", "--image", self.image, "--namespace", "{{workflow.namespace}}"]
            args += ["--resource-output", RESOURCE]
            if self.secret:
                args += ["--secret", self.secret]
            outputs.append(m.Parameter(name="resource", value_from=m.ValueFrom(path=RESOURCE, default="{}")))
        inputs = [m.Parameter(name="item")] if step.fan_out else []
        inputs += [m.Parameter(name=f"in-{_key(up)}") for up in plan.inputs]
        inputs += [m.Parameter(name=f"all-{_key(up)}") for up in plan.collects]
        container = m.Container(
            image=self.image,
            command=POD_COMMAND,
            args=args,
            resources=None if service else _requirements(res.cpus, res.gpus, res.memory),
            env_from=self._env_from(),
        )
        return m.Template(
            name=plan.task,
            inputs=m.Inputs(parameters=inputs) if inputs else None,
            outputs=m.Outputs(parameters=outputs),
            container=container,
            retry_strategy=_retry(step) if step.retries and not service else None,
            active_deadline_seconds=(
                m.IntOrString(math.ceil(step.timeout)) if step.timeout and not service else None
            ),
            metadata=self._pod_metadata(plan),
        )

    def _pod_metadata(self, plan: _StepPlan) -> m.Metadata:
        annotations = {"fanflow.dev/description": plan.step.description} if plan.step.description else None
        return m.Metadata(labels={STEP_LABEL: label_value(plan.name)}, annotations=annotations)

    def _env_from(self) -> list[m.EnvFromSource] | None:
        if not self.secret:
            return None
        return [m.EnvFromSource(secret_ref=m.SecretEnvSource(name=self.secret))]

    def _loop_template(self, plan, arguments, loop, continue_on) -> m.Template:
        """A steps template around a fanned-out step, to hold its ``parallelism``."""
        inner = []
        for parameter in arguments:
            if parameter.name == "item":
                inner.append(parameter)
            else:
                inner.append(
                    m.Parameter(name=parameter.name, value=f"{{{{inputs.parameters.{parameter.name}}}}}")
                )
        inputs = [m.Parameter(name=p.name) for p in arguments if p.name != "item"]
        if plan.source is not None:
            inputs.append(m.Parameter(name="items"))
            loop = {"with_param": "{{inputs.parameters.items}}"}
        return m.Template(
            name=f"{plan.task}-loop",
            parallelism=plan.step.parallelism,
            inputs=m.Inputs(parameters=inputs) if inputs else None,
            steps=[
                m.ParallelSteps(
                    [
                        m.WorkflowStep(
                            name=plan.task,
                            template=plan.task,
                            arguments=m.Arguments(parameters=inner),
                            continue_on=continue_on,
                            **loop,
                        )
                    ]
                )
            ],
            outputs=m.Outputs(
                parameters=[
                    m.Parameter(
                        name="manifest",
                        value_from=m.ValueFrom(
                            parameter=f"{{{{steps.{plan.task}.outputs.parameters.manifest}}}}"
                        ),
                    )
                ]
            ),
        )

    def _quorum(self, plan: _StepPlan) -> tuple[m.DAGTask, m.Template]:
        """The check the quorum fan-in depends on: it counts the succeeded branches."""
        name = f"{plan.task}-quorum"
        sources = graph.fans_in(self.wf, plan.name)
        args = ["--step", plan.name, "--min-success", str(plan.step.min_success)]
        inputs, arguments = [], []
        for source in sources:
            source_plan = self.plans[source]
            args += ["--collect", f"{source}={{{{inputs.parameters.all-{_key(source)}}}}}"]
            inputs.append(m.Parameter(name=f"all-{_key(source)}"))
            arguments.append(m.Parameter(name=f"all-{_key(source)}", value=self._manifest_ref(source)))
            if source_plan.items is not None:
                args += ["--width", f"{source}={len(source_plan.items)}"]
            elif source_plan.source is not None:
                args += ["--width", f"{source}={{{{inputs.parameters.width-{_key(source)}}}}}"]
                inputs.append(m.Parameter(name=f"width-{_key(source)}"))
                arguments.append(
                    m.Parameter(name=f"width-{_key(source)}", value=self._list_ref(source_plan.source))
                )
        template = m.Template(
            name=name,
            inputs=m.Inputs(parameters=inputs),
            container=m.Container(
                image=self.image,
                command=QUORUM_COMMAND,
                args=args,
                resources=m.ResourceRequirements(requests={"cpu": m.Quantity("100m")}),
            ),
            metadata=m.Metadata(labels={STEP_LABEL: label_value(plan.name)}),
        )
        task = m.DAGTask(
            name=name,
            template=name,
            dependencies=[self.plans[s].task for s in sources],
            arguments=m.Arguments(parameters=arguments),
            when=plan.when,
        )
        return task, template

    def _create(self, plan: _StepPlan) -> tuple[m.DAGTask, m.Template]:
        """The resource template that creates a service's InferenceService and waits until
        its model is loaded (ready_timeout)."""
        name = f"{plan.task}-create"
        resource_ref = f"{{{{tasks.{plan.task}.outputs.parameters.resource}}}}"
        loop = {"with_param": resource_ref} if plan.step.fan_out else {}
        template = m.Template(
            name=name,
            inputs=m.Inputs(parameters=[m.Parameter(name="resource")]),
            resource=m.ResourceTemplate(
                action="create",
                manifest="{{inputs.parameters.resource}}",
                success_condition=READY,
                failure_condition=NOT_READY,
                set_owner_reference=None if self.keep_services else True,
            ),
            active_deadline_seconds=m.IntOrString(math.ceil(plan.step.ready_timeout)),
        )
        task = m.DAGTask(
            name=name,
            template=name,
            dependencies=[plan.task],
            arguments=m.Arguments(
                parameters=[m.Parameter(name="resource", value="{{item}}" if loop else resource_ref)]
            ),
            when=plan.when,
            **loop,
        )
        return task, template

    def _cleanup(self, name: str) -> m.Template:
        """The exit handler: delete the run's InferenceServices, however the run ended."""
        return m.Template(
            name=name,
            resource=m.ResourceTemplate(
                action="delete",
                flags=[
                    "inferenceservices.serving.kserve.io",
                    "--selector",
                    f"{RUN_LABEL}={{{{workflow.name}}}}",
                ],
            ),
        )

    def _arguments(self) -> m.Arguments | None:
        parameters = []
        for name, param in self.wf.params.items():
            enum = None
            if param.choices is not None:
                enum = [_param_text(c, param.type) for c in param.choices]
            elif param.type == "bool":
                enum = ["true", "false"]
            value = None if param.required else _param_text(param.default, param.type)
            for text in [value, *(enum or [])]:
                if text is not None and _rewritten(text):
                    self.refuse(None, f"params.{name}", _REWRITTEN)
            parameters.append(
                m.Parameter(name=name, value=value, enum=enum, description=param.description or None)
            )
        return m.Arguments(parameters=parameters) if parameters else None


class _Untranslatable(Exception):
    pass


_COMPARE = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


class _Condition:
    """A ``when`` over parameters as an Argo (govaluate) expression with the same meaning."""

    def __init__(self, workflow: Workflow):
        self.wf = workflow

    def translate(self, expression: str) -> str:
        text, self.refs = conditions.placeholders(expression)
        return self._node(ast.parse(text, mode="eval").body)

    def _node(self, node: ast.AST) -> str:
        if isinstance(node, ast.BoolOp):
            joiner = " && " if isinstance(node.op, ast.And) else " || "
            return joiner.join(f"({self._node(v)})" for v in node.values)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return f"!({self._node(node.operand)})"
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1 or type(node.ops[0]) not in _COMPARE:
                raise _Untranslatable("only one comparison (==, !=, <, <=, >, >=) at a time translates")
            op = type(node.ops[0])
            (left, left_kind), (right, right_kind) = (
                self._operand(node.left),
                self._operand(node.comparators[0]),
            )
            numbers = {"int", "float"}
            same = left_kind == right_kind or {left_kind, right_kind} <= numbers
            if not same or (op not in (ast.Eq, ast.NotEq) and left_kind not in numbers):
                raise _Untranslatable(
                    f"a comparison of {left_kind} with {right_kind} by {_COMPARE[op]} may differ in Argo"
                )
            return f"{left} {_COMPARE[op]} {right}"
        text, kind = self._operand(node)
        if kind != "bool":
            raise _Untranslatable(f"a {kind} used as a condition; compare it with a value")
        return text

    def _operand(self, node: ast.AST) -> tuple[str, str]:
        if isinstance(node, ast.Name) and node.id in ("true", "false"):
            return node.id, "bool"
        if isinstance(node, ast.Name) and node.id in self.refs:
            ref = self.refs[node.id]
            if ref.root != PARAMS or len(ref.path) != 1:
                raise _Untranslatable(
                    f"{ref} is known only once steps ran; Argo decides `when` from parameters "
                    "(compute the decision in a step instead)"
                )
            name = ref.path[0]
            kind = self.wf.params[name].type
            value = f"{{{{workflow.parameters.{name}}}}}"
            if kind == "str":
                return f"'{value}'", "str"
            if kind in ("int", "float", "bool"):
                return value, kind
            raise _Untranslatable(f"parameter {name!r} has type {kind}; declare it str, int, float or bool")
        if isinstance(node, ast.Constant) and not isinstance(node.value, type(None)):
            value = node.value
            if isinstance(value, bool):
                return ("true" if value else "false"), "bool"
            if isinstance(value, int | float):
                return repr(value), "float" if isinstance(value, float) else "int"
            if isinstance(value, str) and "'" not in value and "\\" not in value and "{{" not in value:
                return f"'{value}'", "str"
        if (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
        ):
            text, kind = self._operand(node.operand)
            if kind in ("int", "float"):
                return f"-{text}", kind
        raise _Untranslatable(f"{ast.unparse(node)!r} has no faithful Argo equivalent")


def _key(step: str) -> str:
    """A step's name inside an Argo parameter name (letters, digits, '_' and '-')."""
    return step.replace("/", "-")


def _append(values: list, value) -> None:
    if value not in values:
        values.append(value)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_REWRITTEN = "a value holding '$$', '$(' or '{{', which Kubernetes or Argo would rewrite in a pod's arguments"


def _rewritten(value: Any) -> bool:
    return readable_json(value) != _compact(value)


def _list_parameter(path: tuple, taken: set[str]) -> str:
    name = "-".join(["items", *(str(p).replace("_", "-") for p in path)])
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _param_text(value: Any, kind: str) -> str:
    """A parameter value as the text Argo passes on (and ``fanflow exec`` converts back)."""
    if kind == "str" and isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return _compact(value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _duration(seconds: float) -> str:
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def _requirements(cpus: float, gpus: int, memory: int | None) -> m.ResourceRequirements | None:
    spec = resources(cpus, gpus, memory)
    if spec is None:
        return None
    return m.ResourceRequirements(
        requests={k: m.Quantity(v) for k, v in spec.get("requests", {}).items()} or None,
        limits={k: m.Quantity(v) for k, v in spec.get("limits", {}).items()} or None,
    )


def _retry(step: Step) -> m.RetryStrategy:
    return m.RetryStrategy(
        limit=m.IntOrString(step.retries),
        retry_policy="Always",
        backoff=m.Backoff(duration=_duration(step.retry_backoff), factor=m.IntOrString(2), cap=MAX_BACKOFF),
    )
