"""Kubernetes commands: ``fanflow export argo|kserve`` and what pods run, ``fanflow exec`` and
``fanflow check-quorum``.

Also runnable on its own: ``python -m fanflow.cli.kube exec ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

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
    workflow: Annotated[Path, typer.Argument(help="A workflow file (.yaml or .py).")],
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
    output: OutputOption = None,
) -> None:
    """Write an Argo Workflows manifest that runs each step with `fanflow exec`."""
    from fanflow.exporters import argo
    from fanflow.exporters.kube import to_yaml
    from fanflow.spec.loader import load_workflow

    try:
        spec = load_workflow(workflow)
        manifest = argo.export(
            spec,
            image=image,
            artifacts=artifacts,
            namespace=namespace,
            template=template,
            keep_services=keep_services,
            secret=secret,
        )
    except SpecError as exc:
        raise _spec_errors(exc) from None
    except argo.ExportOptionError as exc:
        raise _fail(str(exc)) from None
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
    from fanflow.exporters.kserve import export_run
    from fanflow.exporters.kube import to_yaml
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
    finally:
        project.close()
    _write(to_yaml(documents), output)


def _selection(tasks: list[dict], spec: dict, select: str | None) -> list[dict]:
    from fanflow.exporters.kserve import selected_models

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
    step: Annotated[str, typer.Option("--step", help="The step's name.")],
    uses: Annotated[str, typer.Option("--uses", help="The function, as 'package.module:function'.")],
    with_: Annotated[str, typer.Option("--with", help="The step's 'with' as JSON, references unresolved.")],
    artifacts: Annotated[str, typer.Option("--artifacts", help="The artifact store's folder or URL.")],
    output: Annotated[Path, typer.Option("--output", help="Where to write the output manifest (JSON).")],
    param: Annotated[
        list[str] | None, typer.Option("--param", help="NAME:TYPE=VALUE, a workflow parameter (repeatable).")
    ] = None,
    item: Annotated[str | None, typer.Option("--item", help="The fan-out item as JSON.")] = None,
    axis: Annotated[
        str | None, typer.Option("--axis", help="--item is this axis's value, not an object of axes.")
    ] = None,
    input_: Annotated[
        list[str] | None, typer.Option("--input", help="STEP=JSON, an upstream step's output manifest.")
    ] = None,
    collect: Annotated[
        list[str] | None,
        typer.Option("--collect", help="STEP=JSON, the list of a fanned-out step's manifests."),
    ] = None,
    list_output: Annotated[
        list[str] | None,
        typer.Option("--list-output", help="'${step...}'=FILE: write a list later steps fan out over."),
    ] = None,
    run: Annotated[str, typer.Option("--run", help="The run's id (the Argo workflow's name).")] = "pod",
    retry: Annotated[int, typer.Option("--retry", help="Attempts already made (Argo's {{retries}}).")] = 0,
    cpus: Annotated[float, typer.Option(help="Cores granted to the task.")] = 1.0,
    gpus: Annotated[int, typer.Option(help="GPUs granted to the task.")] = 0,
    memory: Annotated[int | None, typer.Option(help="Bytes of memory granted to the task.")] = None,
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
    """Run one task of a step, as a pod does (exit 0: succeeded, 1: the task failed, 2: bad usage)."""
    from fanflow.executors import pod

    try:
        task = pod.PodTask(
            step=step,
            uses=uses,
            with_=pod.parse_with(with_),
            artifacts=artifacts,
            params=pod.parse_params(param),
            item=pod.parse_item(item, axis),
            inputs={
                k: pod.parse_json(v, f"--input {k}") for k, v in pod.parse_pairs(input_, "--input").items()
            },
            collected=_collected(pod, collect),
            run_id=run,
            attempt=retry + 1,
            cpus=cpus,
            gpus=gpus,
            memory=memory,
            kind="service" if service else "task",
            import_paths=list(import_path or []),
        )
        lists = pod.parse_list_outputs(list_output)
        if service:
            if resource_output is None or not image:
                raise pod.PodUsageError("--service needs --resource-output and --image")
            code = pod.render_service(
                task,
                str(output),
                str(resource_output),
                image=image,
                namespace=namespace,
                secret=secret,
                lists=lists,
            )
        else:
            code = pod.run_task(task, str(output), lists)
    except pod.PodUsageError as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


def _collected(pod, values: list[str] | None) -> dict[str, list]:
    collected = {}
    for key, text in pod.parse_pairs(values, "--collect").items():
        value = pod.parse_json(text, f"--collect {key}")
        if not isinstance(value, list):
            raise pod.PodUsageError(f"--collect {key}: expected a JSON list of manifests")
        collected[key] = value
    return collected


# -- fanflow check-quorum -------------------------------------------------------------------
def check_quorum_command(
    step: Annotated[str, typer.Option("--step", help="The fan-in step.")],
    min_success: Annotated[str, typer.Option("--min-success", help="A count, or a ratio in (0, 1].")],
    collect: Annotated[
        list[str] | None, typer.Option("--collect", help="STEP=JSON, the manifests of its branches.")
    ] = None,
    width: Annotated[
        list[str] | None, typer.Option("--width", help="STEP=N or STEP=JSON list: how many branches it had.")
    ] = None,
) -> None:
    """Fail unless enough branches of a quorum fan-in succeeded (what an Argo check step runs)."""
    from fanflow.executors import pod

    try:
        rule: int | float = float(min_success) if "." in min_success else int(min_success)
        collected = _collected(pod, collect)
        widths = {}
        for key, text in pod.parse_pairs(width, "--width").items():
            value = pod.parse_json(text, f"--width {key}")
            widths[key] = len(value) if isinstance(value, list) else int(value)
    except (ValueError, TypeError) as exc:
        raise _fail(str(exc)) from None
    try:
        print(pod.check_quorum(step, rule, collected, widths), file=sys.stderr)
    except pod.QuorumNotMet as exc:
        print(f"fanflow: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


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
app.command("check-quorum")(check_quorum_command)


def main() -> None:
    try:
        app()
    except SpecError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
