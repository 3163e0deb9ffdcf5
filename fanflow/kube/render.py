"""Render an Argo plan as a Workflow (or WorkflowTemplate) manifest, built with Hera's models
of Argo's API (``fanflow export argo``).

Argo carries only references and control flow: the run's name, branch numbers, and the
widths and verdicts pods decide. The workflow itself travels once, as a raw input artifact
of the first task, and every value a step reads comes from the run's records in the
artifact store (``fanflow.kube.records``), never from Argo's parameters or the command line.
"""

from __future__ import annotations

import math
from typing import Any

from hera.workflows import models as m

from fanflow.engine.core import MAX_BACKOFF
from fanflow.kube import rbac
from fanflow.kube.manifests import (
    MANAGED_BY,
    RUN_LABEL,
    STEP_LABEL,
    argo_json,
    ordered,
    param_text,
    resources,
)
from fanflow.kube.names import dns_name, label_value
from fanflow.kube.plan import (
    KUBE_READY_TIMEOUT,
    ArgoPlan,
    Options,
    StepPlan,
    free_name,
    plan,
    verdict_parameter,
    width_parameter,
)
from fanflow.kube.pod import EXIT_FINAL
from fanflow.kube.records import workflow_json
from fanflow.kube.versions import has_backoff_cap
from fanflow.spec.model import Step, Workflow

POD_COMMAND = ["fanflow", "exec"]
WORKDIR = "/tmp/fanflow"
WORKFLOW_FILE = f"{WORKDIR}/workflow.json"
PARAMS_DIR = f"{WORKDIR}/params"
DECISIONS_DIR = f"{WORKDIR}/decisions"
RESOURCE_FILE = f"{WORKDIR}/resource.json"
READY = "status.modelStatus.states.activeModelState = Loaded"
NOT_READY = "status.modelStatus.states.targetModelState = FailedToLoad"
RETRY_EXPRESSION = f"asInt(lastRetry.exitCode) != {EXIT_FINAL}"  # no retry where none can help


def export(workflow: Workflow, **options: Any) -> dict[str, Any]:
    """The Workflow (or WorkflowTemplate) manifest as a plain dict. Raises SpecError naming
    every step and field that does not translate, ExportOptionError for a bad option."""
    return render(plan(workflow, Options(**options)))


def export_rbac(workflow: Workflow, **options: Any) -> list[dict[str, Any]]:
    """The ServiceAccount, Role and RoleBinding the workflow's pods need."""
    opts = Options(**options)
    services = any(step.kind == "service" for step in workflow.steps.values())
    return rbac.documents(opts.service_account or "", opts.namespace, services=services)


def render(argo: ArgoPlan) -> dict[str, Any]:
    return _Renderer(argo).document()


class _Renderer:
    def __init__(self, argo: ArgoPlan):
        self.plan = argo
        self.wf = argo.workflow
        self.opts = argo.options

    def document(self) -> dict[str, Any]:
        tasks = [self._begin_task()]
        templates = [self._begin_template()]
        for step in self.plan.steps.values():
            tasks.append(self._task(step))
            templates += self._templates(step)
        names = {t.name for t in templates}
        entry = free_name("main", names)
        dag = m.Template(
            name=entry,
            dag=m.DAGTemplate(tasks=tasks, fail_fast=False if self.wf.on_failure == "continue" else None),
        )
        on_exit = None
        if any(s.service for s in self.plan.steps.values()) and not self.opts.keep_services:
            on_exit = free_name("cleanup", names | {entry})
            templates.append(self._cleanup(on_exit))
        spec = m.WorkflowSpec(
            entrypoint=entry,
            on_exit=on_exit,
            service_account_name=self.opts.service_account,
            arguments=self._arguments(),
            parallelism=self.wf.parallelism,
            templates=[dag, *templates],
        )
        kind = m.WorkflowTemplate if self.opts.template else m.Workflow
        document = kind(
            api_version="argoproj.io/v1alpha1", kind=kind.__name__, metadata=self._metadata(), spec=spec
        )
        return ordered(document.model_dump(by_alias=True, exclude_none=True, mode="json"))

    def _metadata(self) -> m.ObjectMeta:
        name = dns_name(self.wf.name, 57)  # Argo adds 5 characters to a generated name; 63 at most
        labels = {**MANAGED_BY, "fanflow.dev/workflow": name}
        if self.wf.version:
            labels["fanflow.dev/version"] = label_value(self.wf.version)
        annotations = (
            {"workflows.argoproj.io/description": self.wf.description} if self.wf.description else None
        )
        return m.ObjectMeta(
            name=name if self.opts.template else None,
            generate_name=None if self.opts.template else f"{name}-",
            namespace=self.opts.namespace,
            labels=labels,
            annotations=annotations,
        )

    def _arguments(self) -> m.Arguments | None:
        parameters = []
        for name, param in self.wf.params.items():
            enum = None
            if param.choices is not None:
                enum = [param_text(c, param.type) for c in param.choices]
            elif param.type == "bool":
                enum = ["true", "false"]
            value = None if param.required else param_text(param.default, param.type)
            parameters.append(
                m.Parameter(name=name, value=value, enum=enum, description=param.description or None)
            )
        return m.Arguments(parameters=parameters) if parameters else None

    # -- the first task: record the run -------------------------------------------------
    def _begin_task(self) -> m.DAGTask:
        return m.DAGTask(name=self.plan.begin, template=self.plan.begin)

    def _begin_template(self) -> m.Template:
        spec = workflow_json(self.wf)
        artifacts = [m.Artifact(name="workflow", path=WORKFLOW_FILE, raw=m.RawArtifact(data=argo_json(spec)))]
        for name in self.wf.params:
            artifacts.append(
                m.Artifact(
                    name=f"param-{name}",
                    path=f"{PARAMS_DIR}/{name}",
                    raw=m.RawArtifact(data=f"{{{{workflow.parameters.{name}}}}}"),
                )
            )
        args = ["--begin", "--workflow", WORKFLOW_FILE]
        if self.wf.params:
            args += ["--params", PARAMS_DIR]
        args, outputs = self._decisions(args, self.plan.widths, self.plan.verdicts)
        return m.Template(
            name=self.plan.begin,
            inputs=m.Inputs(artifacts=artifacts),
            outputs=m.Outputs(parameters=outputs) if outputs else None,
            container=self._container(args, m.ResourceRequirements(requests={"cpu": m.Quantity("100m")})),
        )

    # -- steps --------------------------------------------------------------------------
    def _task(self, step: StepPlan) -> m.DAGTask:
        arguments, sequence = None, None
        if step.width is not None and step.loop:
            arguments = m.Arguments(parameters=[m.Parameter(name="width", value=step.width)])
        elif step.width is not None:
            sequence = m.Sequence(count=m.IntOrString(step.width))
            arguments = m.Arguments(parameters=[m.Parameter(name="branch", value="{{item}}")])
        return m.DAGTask(
            name=step.task,
            template=f"{step.task}-loop" if step.loop else step.task,
            depends=step.depends,
            when=step.when,
            with_sequence=sequence,
            arguments=arguments,
        )

    def _templates(self, step: StepPlan) -> list[m.Template]:
        if step.service:
            return self._service_templates(step)
        templates = [self._pod_template(step, step.task)]
        if step.loop:
            templates.append(self._loop_template(step))
        return templates

    def _pod_template(self, step: StepPlan, name: str, *, service: bool = False) -> m.Template:
        spec = step.step
        args = ["--step", step.name]
        inputs = None
        if spec.fan_out:
            args += ["--branch", "{{inputs.parameters.branch}}"]
            inputs = m.Inputs(parameters=[m.Parameter(name="branch")])
        if spec.retries:
            args += ["--retry", "{{retries}}"]
        outputs: list[m.Parameter] = []
        if service:
            args += ["--service", "--resource-output", RESOURCE_FILE, "--image", self.opts.image]
            args += ["--namespace", "{{workflow.namespace}}"]
            if self.opts.secret:
                args += ["--secret", self.opts.secret]
            outputs.append(m.Parameter(name="resource", value_from=m.ValueFrom(path=RESOURCE_FILE)))
        args, decisions = self._decisions(args, step.widths, step.verdicts)
        outputs += decisions
        res = spec.effective_resources
        annotations = {"fanflow.dev/description": spec.description} if spec.description else None
        return m.Template(
            name=name,
            inputs=inputs,
            outputs=m.Outputs(parameters=outputs) if outputs else None,
            container=self._container(
                args, None if service else _requirements(res.cpus, res.gpus, res.memory)
            ),
            retry_strategy=self._retry(spec) if spec.retries and not service else None,
            active_deadline_seconds=(
                m.IntOrString(str(math.ceil(spec.timeout))) if spec.timeout and not service else None
            ),
            metadata=m.Metadata(labels={STEP_LABEL: label_value(step.name)}, annotations=annotations),
        )

    def _container(self, args: list[str], requests: m.ResourceRequirements | None) -> m.Container:
        env_from = (
            [m.EnvFromSource(secret_ref=m.SecretEnvSource(name=self.opts.secret))]
            if self.opts.secret
            else None
        )
        common = ["--artifacts", self.opts.artifacts, "--run", "{{workflow.name}}"]
        return m.Container(
            image=self.opts.image,
            command=POD_COMMAND,
            args=common + args,
            resources=requests,
            env_from=env_from,
        )

    def _decisions(self, args: list[str], widths: list[str], verdicts: list[str]) -> tuple[list, list]:
        """The options that make a pod write the widths and verdicts it decides, and the
        output parameters Argo reads them from."""
        outputs = []
        for option, steps, parameter, default in (
            ("--width", widths, width_parameter, "1"),
            ("--verdict", verdicts, verdict_parameter, "true"),
        ):
            for name in steps:
                name_out = parameter(self.plan.steps[name].task)
                path = f"{DECISIONS_DIR}/{name_out}"
                args = [*args, option, f"{name}={path}"]
                outputs.append(m.Parameter(name=name_out, value_from=m.ValueFrom(path=path, default=default)))
        return args, outputs

    def _retry(self, spec: Step) -> m.RetryStrategy:
        longest = spec.retry_backoff * 2 ** (spec.retries - 1)
        capped = longest > MAX_BACKOFF and has_backoff_cap(self.opts.argo_version)
        return m.RetryStrategy(
            limit=m.IntOrString(str(spec.retries)),
            retry_policy="Always",
            expression=RETRY_EXPRESSION,
            backoff=m.Backoff(
                duration=duration(spec.retry_backoff),
                factor=m.IntOrString("2"),
                cap=duration(MAX_BACKOFF) if capped else None,
            ),
        )

    def _loop_template(self, step: StepPlan) -> m.Template:
        """A steps template around a fanned-out step, to hold its ``parallelism``."""
        return m.Template(
            name=f"{step.task}-loop",
            parallelism=step.step.parallelism,
            inputs=m.Inputs(parameters=[m.Parameter(name="width")]),
            steps=[
                m.ParallelSteps(
                    [
                        m.WorkflowStep(
                            name=step.task,
                            template=step.task,
                            with_sequence=m.Sequence(count=m.IntOrString("{{inputs.parameters.width}}")),
                            arguments=m.Arguments(parameters=[m.Parameter(name="branch", value="{{item}}")]),
                        )
                    ]
                )
            ],
        )

    # -- services -----------------------------------------------------------------------
    def _service_templates(self, step: StepPlan) -> list[m.Template]:
        """A service branch: a pod renders its InferenceService, then a resource template
        creates it and waits until its model is loaded (``ready_timeout``)."""
        render, create = f"{step.task}-render", f"{step.task}-create"
        branch = (
            [m.Parameter(name="branch", value="{{inputs.parameters.branch}}")] if step.step.fan_out else None
        )
        steps = m.Template(
            name=step.task,
            inputs=m.Inputs(parameters=[m.Parameter(name="branch")]) if step.step.fan_out else None,
            steps=[
                m.ParallelSteps(
                    [
                        m.WorkflowStep(
                            name="render",
                            template=render,
                            arguments=m.Arguments(parameters=branch) if branch else None,
                        )
                    ]
                ),
                m.ParallelSteps(
                    [
                        m.WorkflowStep(
                            name="create",
                            template=create,
                            arguments=m.Arguments(
                                parameters=[
                                    m.Parameter(
                                        name="resource", value="{{steps.render.outputs.parameters.resource}}"
                                    )
                                ]
                            ),
                        )
                    ]
                ),
            ],
        )
        spec = step.step
        timeout = spec.ready_timeout if "ready_timeout" in spec.model_fields_set else KUBE_READY_TIMEOUT
        resource = m.Template(
            name=create,
            inputs=m.Inputs(parameters=[m.Parameter(name="resource")]),
            resource=m.ResourceTemplate(
                action="create",
                manifest="{{inputs.parameters.resource}}",
                success_condition=READY,
                failure_condition=NOT_READY,
                set_owner_reference=None if self.opts.keep_services else True,
            ),
            active_deadline_seconds=m.IntOrString(str(math.ceil(timeout))),
        )
        return [steps, self._pod_template(step, render, service=True), resource]

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


def duration(seconds: float) -> str:
    """An Argo duration: ``90s``, or ``1500ms`` for a fraction of a second."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def _requirements(cpus: float, gpus: int, memory: int | None) -> m.ResourceRequirements | None:
    spec = resources(cpus, gpus, memory)
    if spec is None:
        return None
    return m.ResourceRequirements(
        requests={k: m.Quantity(v) for k, v in spec.get("requests", {}).items()} or None,
        limits={k: m.Quantity(v) for k, v in spec.get("limits", {}).items()} or None,
    )
