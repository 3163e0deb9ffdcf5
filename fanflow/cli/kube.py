"""Kubernetes commands: ``fanflow export argo|kserve`` and what pods run, ``fanflow exec``.

Also runnable on its own: ``python -m fanflow.cli.kube exec ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fanflow.kube.versions import OLDEST as OLDEST_ARGO
from fanflow.spec.errors import SpecError

export_app = typer.Typer(
    name="export",
    help="Translate a workflow or a finished run for Argo Workflows and KServe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ImageOption = Annotated[
    str, typer.Option("--image", help="The container image, with fanflow installed, that every pod runs.")
]
NamespaceOption = Annotated[str | None, typer.Option("--namespace", "-n", help="The Kubernetes namespace.")]
OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
]
SecretOption = Annotated[
    str | None,
    typer.Option(
        "--secret", help="A Secret whose keys become every container's environment (store credentials)."
    ),
]


def _fail(message: str) -> typer.Exit:
    """One line on stderr; exit code 2 (a usage error)."""
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(2)


def _spec_errors(exc: SpecError) -> typer.Exit:
    for issue in exc.issues:
        print(f"error: {issue}", file=sys.stderr)
    return typer.Exit(2)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}", file=sys.stderr)


# -- fanflow export argo ------------------------------------------------------------------
@export_app.command("argo")
def export_argo(
    workflow: Annotated[
        Path, typer.Argument(help="A workflow file (.yaml or .py) or an installed workflow's name.")
    ],
    image: ImageOption,
    artifacts: Annotated[
        str,
        typer.Option("--artifacts", help="The artifact store every pod reaches, e.g. s3://bucket/fanflow."),
    ],
    namespace: NamespaceOption = None,
    template: Annotated[
        bool, typer.Option("--template", help="Write a WorkflowTemplate instead of a Workflow.")
    ] = False,
    keep_services: Annotated[
        bool, typer.Option("--keep-services", help="Leave the InferenceServices up when the workflow ends.")
    ] = False,
    secret: SecretOption = None,
    service_account: Annotated[
        str | None,
        typer.Option("--service-account", help="The service account every pod of the workflow runs as."),
    ] = None,
    rbac_output: Annotated[
        Path | None,
        typer.Option(
            "--rbac-output",
            help="With --service-account: write the ServiceAccount, Role and RoleBinding it needs here.",
        ),
    ] = None,
    argo_version: Annotated[
        str,
        typer.Option(
            "--argo-version", help="The oldest Argo Workflows version the manifest must run on (3.4 to 4.1)."
        ),
    ] = OLDEST_ARGO,
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="Use one of the workflow's named parameter sets as the parameters' defaults."),
    ] = None,
    output: OutputOption = None,
) -> None:
    """Write an Argo Workflows manifest that runs each step with `fanflow exec`."""
    from fanflow.cli.common import UsageError, locate
    from fanflow.kube import plan, render, versions
    from fanflow.kube.manifests import to_yaml
    from fanflow.spec.loader import load_workflow
    from fanflow.spec.presets import apply_preset

    if rbac_output is not None and not service_account:
        raise _fail("--rbac-output: name the service account with --service-account")
    try:
        spec = apply_preset(load_workflow(locate(workflow)), preset)
        options = dict(
            image=image,
            artifacts=artifacts,
            namespace=namespace,
            template=template,
            keep_services=keep_services,
            secret=secret,
            service_account=service_account,
            argo_version=versions.parse(argo_version),
        )
        manifest = render.export(spec, **options)
        rbac = render.export_rbac(spec, **options) if rbac_output is not None else None
    except SpecError as exc:
        raise _spec_errors(exc) from None
    except (plan.ExportOptionError, versions.VersionError, UsageError) as exc:
        raise _fail(str(exc)) from None
    if rbac is not None:
        _write(to_yaml(rbac), rbac_output)
    _write(to_yaml(manifest), output)


# -- fanflow export kserve ----------------------------------------------------------------
@export_app.command("kserve")
def export_kserve(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="A finished run (an id or a unique prefix).")],
    image: ImageOption,
    artifacts: Annotated[
        str | None,
        typer.Option(
            "--artifacts", help="Where the cluster finds the run's artifacts (default: the run's store)."
        ),
    ] = None,
    select: Annotated[
        str | None, typer.Option("--select", help="The step whose output lists the selected models.")
    ] = None,
    strategy: Annotated[str, typer.Option(help="How the gateway combines its members' tags.")] = "union",
    name: Annotated[str | None, typer.Option("--name", help="Prefix of the resources' names.")] = None,
    namespace: NamespaceOption = None,
    secret: SecretOption = None,
    output: OutputOption = None,
    home: Annotated[
        Path | None, typer.Option("--home", help="The project's store folder (default: $FANFLOW_HOME, else .fanflow at the project root).")
    ] = None,
) -> None:
    """Write one KServe InferenceService per model a finished run selected, and the gateway."""
    from fanflow.kube.kserve import ServiceError, export_run
    from fanflow.kube.manifests import to_yaml
    from fanflow.project import Project

    project = Project(home)
    try:
        row = project.store.get_run(run_id)
        if row is None:
            raise _fail(f"no run {run_id!r} in {project.db_url} (see: fanflow runs)")
        if row.state != "succeeded":
            raise _fail(f"run {row.id} is {row.state}: export the models of a succeeded run")
        url = artifacts or project.artifacts_url
        if "://" not in url or url.startswith("file://"):
            raise _fail(
                f"the run's artifacts are in the folder {url}, which the cluster cannot read: copy its "
                "objects/ to an object store and pass --artifacts s3://bucket/prefix"
            )
        candidates = _selection(project.store.tasks(row.id), row.spec, select)
        try:
            documents = export_run(
                row.workflow,
                row.id,
                candidates,
                image=image,
                artifacts=url,
                namespace=namespace,
                prefix=name,
                strategy=strategy,
                secret=secret,
            )
        except ServiceError as exc:
            raise _fail(str(exc)) from None
    finally:
        project.close()
    _write(to_yaml(documents), output)


def _selection(tasks: list[dict], spec: dict, select: str | None) -> list[dict]:
    from fanflow.kube.kserve import selected_models

    steps = list(spec.get("steps", {}))
    if select is not None and select not in steps:
        raise _fail(f"--select {select!r}: the run has no such step (steps: {', '.join(steps)})")
    found = {}
    for task in tasks:
        if task["state"] == "succeeded" and task["name"] == task["step"]:
            models = selected_models(task["output"])
            if models is not None:
                found[task["step"]] = models
    if select is not None:
        if select not in found:
            raise _fail(
                f"--select {select}: its output is not a list of selected models (dicts with a 'name' "
                "and a 'model' file)"
            )
        return found[select]
    chosen = [s for s in steps if s in found]
    if not chosen:
        raise _fail(
            "the run has no step whose output lists selected models (dicts with a 'name' and a 'model' "
            "file); name one with --select STEP"
        )
    return found[chosen[-1]]


# -- fanflow exec ---------------------------------------------------------------------------
def exec_command(
    artifacts: Annotated[str, typer.Option("--artifacts", help="The run's artifact store (a folder or URL).")],
    run: Annotated[str, typer.Option("--run", help="The run's id (the Argo workflow's name).")],
    step: Annotated[str | None, typer.Option("--step", help="Run one task of this step.")] = None,
    branch: Annotated[
        int | None, typer.Option("--branch", help="Which branch of a fanned-out step (0, 1, ...).")
    ] = None,
    retry: Annotated[int, typer.Option("--retry", help="Attempts already made (Argo's {{retries}}).")] = 0,
    begin: Annotated[
        bool, typer.Option("--begin", help="Record the run (its workflow and parameters) instead.")
    ] = False,
    workflow: Annotated[
        Path | None, typer.Option("--workflow", help="With --begin: the workflow (.json spec, .yaml or .py).")
    ] = None,
    params: Annotated[
        Path | None,
        typer.Option("--params", help="With --begin: a folder with one file per parameter, holding its text."),
    ] = None,
    width: Annotated[
        list[str] | None,
        typer.Option("--width", help="STEP=FILE: write how many branches STEP has (repeatable)."),
    ] = None,
    verdict: Annotated[
        list[str] | None,
        typer.Option("--verdict", help="STEP=FILE: write whether STEP's condition holds (repeatable)."),
    ] = None,
    import_path: Annotated[
        list[str] | None, typer.Option("--import-path", help="A folder to import step modules from.")
    ] = None,
    service: Annotated[
        bool, typer.Option("--service", help="Render the step's InferenceService instead of running it.")
    ] = False,
    resource_output: Annotated[
        Path | None, typer.Option("--resource-output", help="With --service: where to write the resource.")
    ] = None,
    image: Annotated[str | None, typer.Option("--image", help="With --service: the server's image.")] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="With --service: its namespace.")
    ] = None,
    secret: SecretOption = None,
) -> None:
    """Run one task of a run's step as a pod does, its inputs read from the run's records
    (exit 0: succeeded, 1: failed, 3: failed for good, 2: bad usage); with --begin, record
    the run first."""
    from fanflow.kube import pod
    from fanflow.kube.records import RecordError, RunRecords

    try:
        records = RunRecords(artifacts, run)
        decisions = pod.Decisions(pod.parse_pairs(width, "--width"), pod.parse_pairs(verdict, "--verdict"))
        if begin:
            if workflow is None or step is not None:
                raise pod.PodUsageError("--begin takes --workflow (and --params), not --step")
            spec = pod.load_workflow_file(workflow)
            code = pod.begin(records, spec, pod.read_params(params), decisions)
        elif step is None:
            raise pod.PodUsageError("give --step STEP (or --begin to record the run)")
        else:
            task = pod.PodTask.open(records, step, branch, retry + 1)
            if service:
                if resource_output is None or not image:
                    raise pod.PodUsageError("--service needs --resource-output and --image")
                code = pod.render_service(
                    task, decisions, resource_output, image=image, namespace=namespace, secret=secret
                )
            else:
                code = pod.run_task(task, decisions, list(import_path or []))
    except (pod.PodUsageError, RecordError) as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


# -- running this module on its own ---------------------------------------------------------
app = typer.Typer(
    name="fanflow",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(export_app, name="export")
app.command("exec")(exec_command)


def main() -> None:
    try:
        app()
    except SpecError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
