"""``fanflow``: run, check, draw and inspect workflows."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from fanflow.spec.errors import SpecError

app = typer.Typer(
    name="fanflow",
    help="Machine-learning workflows built on fan-out and fan-in.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Piped output (a log, CI) gets 120 columns rather than Rich's 80, so reports stay readable.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120)

HomeOption = Annotated[
    Path | None, typer.Option("--home", help="Project folder (default: $FANFLOW_HOME or ./.fanflow).")
]


class UsageError(Exception):
    """A user's mistake: one line on stderr, exit code 2."""


def main() -> None:
    try:
        app()
    except SpecError as exc:
        for issue in exc.issues:
            err.print(f"[bold red]error:[/] {_escape(str(issue))}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(2)
    except UsageError as exc:
        err.print(f"[bold red]error:[/] {_escape(str(exc))}", soft_wrap=True)
        sys.exit(2)


def _project(home: Path | None):
    from fanflow.project import Project

    return Project(home)


def _params(values: list[str] | None) -> dict[str, str]:
    params = {}
    for value in values or []:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-p {value!r}: expected KEY=VALUE")
        params[key.strip()] = text
    return params


def _load(path: Path):
    """A workflow file, or the name of an installed workflow (``fanflow list``)."""
    from fanflow.spec.loader import load_workflow

    return load_workflow(_locate(path))


def _locate(path: Path) -> Path:
    from fanflow import bundle

    if bundle.is_bundle(path):
        workflow, manifest = bundle.unpack(path, _project(None).home)
        for problem in bundle.missing_requirements(manifest):
            err.print(f"[yellow]warning:[/] {_escape(problem)} (see {workflow.parent}/requirements.txt)", markup=True)
        return workflow
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    from fanflow.spec.registry import find_installed

    try:
        return find_installed(str(path))
    except LookupError as exc:
        raise UsageError(f"{path}: no such file, and {exc}") from None


# -- run -----------------------------------------------------------------------------------
@app.command()
def run(
    workflow: Annotated[Path, typer.Argument(help="A workflow file (.yaml or .py).")],
    param: Annotated[list[str] | None, typer.Option("-p", "--param", help="KEY=VALUE, repeatable.")] = None,
    executor: Annotated[str, typer.Option(help="Where tasks run: local or ray.")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (with --executor ray).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run every task, reusing nothing.")] = False,
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep services up after the run until Ctrl-C.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the run's result as JSON.")] = False,
    home: HomeOption = None,
) -> None:
    """Run a workflow and show every task as it goes."""
    spec = _load(workflow)
    _execute(
        spec,
        _params(param),
        executor=executor,
        address=address,
        cache=not no_cache,
        serve=serve,
        json_output=json_output,
        home=home,
    )


def _execute(
    spec,
    params: dict[str, Any],
    *,
    home: Path | None,
    executor: str = "local",
    address: str | None = None,
    cache: bool = True,
    serve: bool = False,
    json_output: bool = False,
    resume: str | None = None,
) -> None:
    from fanflow.cli.live import RunView

    project = _project(home)
    options = {"address": address} if address else {}
    view = RunView(f"{spec.name}")
    runner = project.runner(
        spec,
        params=params,
        executor=executor,
        executor_options=options,
        cache=cache,
        keep_services=serve,
        listeners=[view],
        resume=resume,
    )
    view.title = f"{spec.name} · run {runner.run_id}" + (f" · resumes {resume}" if resume else "")
    with view:
        result = runner.run()
    err.print(view.summary())
    _report(result, runner, project, json_output)
    if serve and result.state == "succeeded" and result.services:
        _keep_serving(runner, result)
    project.close()
    raise typer.Exit(0 if result.state == "succeeded" else (130 if result.state == "cancelled" else 1))


def _report(result, runner, project, json_output: bool) -> None:
    from fanflow.engine.core import State

    tasks = list(result.tasks.values())
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task.state.value] = counts.get(task.state.value, 0) + 1
    cached = sum(1 for t in tasks if t.cached)
    leaves = [name for name, s in runner.plan.steps.items() if not s.downstream]
    results = {}
    for name in leaves:
        outputs = [
            _readable(t.output, project.artifacts_url)
            for t in tasks
            if t.step == name and t.state in (State.SUCCEEDED, State.SERVING)
        ]
        if outputs:
            fanned = bool(runner.plan.steps[name].step.fan_out)
            results[name] = outputs if fanned else outputs[0]
    if json_output:
        print(
            json.dumps(
                {
                    "run": result.run_id,
                    "state": result.state,
                    "error": result.error,
                    "duration": round(result.duration, 3),
                    "tasks": counts,
                    "cached": cached,
                    "results": results,
                },
                indent=2,
                default=str,
            )
        )
        return
    for name, value in results.items():
        if _show_report(name, value):
            continue
        text = json.dumps(value, indent=2, default=str)
        if len(text) > 4000:
            text = text[:4000] + "\n…"
        out.print(f"[bold]{_escape(name)}[/] =", text, markup=True, highlight=False, soft_wrap=True)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    style = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}[result.state]
    err.print(
        f"[bold {style}]run {result.run_id} {result.state}[/] in {result.duration:.1f}s "
        f"({len(tasks)} tasks: {summary}" + (f"; {cached} reused" if cached else "") + ")",
        markup=True,
        soft_wrap=True,
    )
    if result.error:
        err.print(f"[red]{_escape(result.error)}[/]", markup=True, soft_wrap=True)
    if result.state != "succeeded":
        err.print(f"inspect: fanflow show {result.run_id}   resume: fanflow resume {result.run_id}")


def _show_report(step: str, value: Any) -> bool:
    """A result that holds a Markdown report (``{"markdown": file, ...}``) is shown as the
    report itself, with where its other files are."""
    if not (isinstance(value, dict) and isinstance(value.get("markdown"), str) and value["markdown"].endswith(".md")):
        return False
    path = Path(value["markdown"])
    if not path.is_file():
        return False
    from rich.markdown import Markdown

    out.print(Markdown(path.read_text(encoding="utf-8")))
    for key, item in value.items():
        if key != "markdown" and isinstance(item, str) and Path(item).is_file():
            out.print(f"[dim]{_escape(step)} {key}: {_escape(item)}[/]", markup=True, soft_wrap=True)
    return True


def _readable(manifest: Any, artifacts_url: str) -> Any:
    """Artifact references shown as the local files they are stored in."""
    from fanflow.stores.values import ARTIFACT_KEY

    if isinstance(manifest, dict):
        if ARTIFACT_KEY in manifest:
            digest = manifest[ARTIFACT_KEY].removeprefix("sha256:")
            if "://" not in artifacts_url:
                return f"{artifacts_url}/objects/{digest[:2]}/{digest}{manifest.get('suffix', '')}"
            return manifest[ARTIFACT_KEY]
        return {k: _readable(v, artifacts_url) for k, v in manifest.items()}
    if isinstance(manifest, list):
        return [_readable(v, artifacts_url) for v in manifest]
    return manifest


def _keep_serving(runner, result) -> None:
    for name, endpoint in result.services.items():
        url = endpoint.get("url") if isinstance(endpoint, dict) else endpoint
        out.print(f"[bold green]serving[/] {_escape(name)}: {url}", markup=True)
    err.print("press Ctrl-C to stop")
    stop = threading.Event()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runner.supervise(stop)
    runner.stop_services()


# -- resume --------------------------------------------------------------------------------
@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run to continue.")],
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Reuse only the resumed run's own tasks.")
    ] = False,
    executor: Annotated[str, typer.Option(help="Where tasks run: local or ray.")] = "local",
    home: HomeOption = None,
) -> None:
    """Continue a failed, cancelled or interrupted run: finished tasks are reused."""
    from fanflow.project import RunNotFound

    project = _project(home)
    try:
        spec, params, previous = project.resumable(run_id)
    except RunNotFound as exc:
        raise UsageError(str(exc)) from None
    _execute(spec, params, home=home, executor=executor, cache=not no_cache, resume=previous)


# -- serving ---------------------------------------------------------------------------------
@app.command()
def serve(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="A finished run with service steps.")],
    home: HomeOption = None,
) -> None:
    """Bring a finished run's services (its selected models' servers and the gateway) back up
    from its artifacts, without retraining; print their URLs and serve until Ctrl-C."""
    from fanflow.project import RunNotFound

    project = _project(home)
    try:
        spec, params, previous = project.servable(run_id)
    except RunNotFound as exc:
        raise UsageError(str(exc)) from None
    _execute(spec, params, home=home, serve=True, resume=previous)


@app.command()
def predict(
    clip_files: Annotated[
        list[Path], typer.Argument(metavar="CLIP_FILE...", help="Video files or .npy clips.")
    ],
    url: Annotated[str, typer.Option(help="A model server's or the gateway's address.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Tag clips with a served model or the ensemble; each tag says which model found it."""
    from fanflow.serving.cli import predict as run_predict

    raise typer.Exit(run_predict(url, clip_files, as_json=json_output))


# -- validate, schema, graph -----------------------------------------------------------------
@app.command()
def validate(workflow: Annotated[Path, typer.Argument(help="A workflow file (.yaml or .py).")]) -> None:
    """Check a workflow file; print its steps when it is valid."""
    spec = _load(workflow)
    out.print(
        f"[green]✓[/] {workflow}: workflow {spec.name!r}, {len(spec.steps)} steps ({', '.join(spec.steps)})",
        markup=True,
        soft_wrap=True,
    )


@app.command()
def pack(
    workflow: Annotated[Path, typer.Argument(help="A workflow file or an installed workflow's name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the bundle into.")] = Path("."),
) -> None:
    """Write one self-contained, versioned bundle of a workflow (its files, its project
    modules and pinned requirements) that `fanflow run BUNDLE` runs elsewhere."""
    from fanflow import bundle

    path = bundle.pack(_locate(workflow), output)
    out.print(str(path))


@app.command("list")
def list_workflows() -> None:
    """List the workflows installed by Python packages (the fanflow.workflows entry points)."""
    from fanflow.spec.loader import load_workflow
    from fanflow.spec.registry import installed

    table = Table(header_style="bold", box=None)
    for column in ("name", "package", "description"):
        table.add_column(column, overflow="fold")
    for name, entry in installed().items():
        try:
            description = load_workflow(entry.path(), check_imports=False).description
        except Exception as exc:  # a broken package must not hide the others
            description = f"[red]cannot load: {_escape(str(exc))}[/]"
        table.add_row(name, entry.package or "", description)
    out.print(table if table.row_count else "no workflows installed")


@app.command()
def describe(workflow: Annotated[Path, typer.Argument(help="A workflow file or an installed workflow's name.")]) -> None:
    """Show a workflow's parameters (types, defaults, descriptions) and steps."""
    spec = _load(workflow)
    out.print(f"[bold]{_escape(spec.name)}[/]" + (f": {_escape(spec.description)}" if spec.description else ""), markup=True)
    params = Table(title="parameters", title_justify="left", header_style="bold", box=None)
    for column in ("name", "type", "default", "description"):
        params.add_column(column, overflow="fold")
    for name, param in spec.params.items():
        default = "(required)" if param.required else json.dumps(param.default, default=str)
        choices = f" (one of {', '.join(map(str, param.choices))})" if param.choices else ""
        params.add_row(name, param.type, default, param.description + choices)
    out.print(params)
    steps = Table(title="steps", title_justify="left", header_style="bold", box=None)
    for column in ("step", "uses", "fan-out", "kind"):
        steps.add_column(column, overflow="fold")
    for name, step in spec.steps.items():
        fan = ", ".join(f"{axis}: {values if isinstance(values, str) else len(values)}"
                        for axis, values in (step.fan_out or {}).items())
        steps.add_row(name, step.uses, fan, step.kind)
    out.print(steps)


@app.command()
def schema() -> None:
    """Print the workflow files' JSON Schema (for editors to check and complete them)."""
    from fanflow.spec.schema import json_schema

    print(json.dumps(json_schema(), indent=2))


@app.command()
def graph(
    workflow: Annotated[Path, typer.Argument(help="A workflow file (.yaml or .py).")],
    format: Annotated[str, typer.Option("--format", "-f", help="mermaid, dot or png.")] = "mermaid",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Draw a workflow as Mermaid or Graphviz DOT (or a PNG where Graphviz is installed)."""
    from fanflow.exporters import graph as drawing

    spec = _load(workflow)
    if format == "png":
        target = output or Path(f"{spec.name}.png")
        if not drawing.png(spec, str(target)):
            raise UsageError(
                "PNG needs Graphviz's 'dot' program (apt-get install graphviz); use --format dot or mermaid"
            )
        err.print(f"wrote {target}")
        return
    if format not in ("mermaid", "dot"):
        raise UsageError(f"--format {format!r}: expected mermaid, dot or png")
    text = drawing.mermaid(spec) if format == "mermaid" else drawing.dot(spec)
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")
    else:
        print(text, end="")


# -- inspecting runs ---------------------------------------------------------------------
@app.command()
def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many, newest first.")] = 20,
    workflow: Annotated[str | None, typer.Option(help="Only this workflow's runs.")] = None,
    home: HomeOption = None,
) -> None:
    """List recent runs."""
    project = _project(home)
    rows = project.store.list_runs(limit, workflow)
    table = Table(header_style="bold", box=None)
    for column in ("run", "workflow", "state", "started", "duration", "error"):
        table.add_column(column, overflow="fold")
    from fanflow.cli.live import STYLE

    for row in rows:
        table.add_row(
            row.id,
            row.workflow,
            f"[{STYLE.get(row.state, 'red')}]{row.state}[/]",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.started)),
            f"{row.duration:.1f}s" if row.duration is not None else "",
            Text((row.error or "")[:100]),
        )
    out.print(table if rows else "no runs yet")


def _run_row(project, run_id: str):
    row = project.store.get_run(run_id)
    if row is None:
        raise UsageError(f"no run {run_id!r} in {project.db_url} (see: fanflow runs)")
    return row


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(metavar="RUN")],
    json_output: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    home: HomeOption = None,
) -> None:
    """Show a run's tasks: states, attempts, durations, reuse and outputs."""
    project = _project(home)
    row = _run_row(project, run_id)
    tasks = project.store.tasks(row.id)
    attempts = project.store.attempts(row.id)
    if json_output:
        print(json.dumps({"run": row.__dict__, "tasks": tasks, "attempts": attempts}, indent=2, default=str))
        return
    from fanflow.cli.live import STYLE, SYMBOL

    by_task: dict[str, list] = {}
    for attempt in attempts:
        by_task.setdefault(attempt["task"], []).append(attempt)
    duration = f"{row.duration:.1f}s" if row.duration is not None else "-"
    tree = Tree(
        f"[bold]{row.workflow}[/] run {row.id}: [{STYLE.get(row.state, 'red')}]{row.state}[/] in {duration}"
        + (f" (resumes {row.resumed_from})" if row.resumed_from else "")
    )
    if row.params:
        tree.add("params: " + json.dumps(row.params, default=str))
    steps: dict[str, Any] = {}
    for task in tasks:
        branch = steps.get(task["step"])
        if branch is None:
            branch = steps[task["step"]] = tree.add(f"[bold]{task['step']}[/]")
        took = ""
        if task["started"] and task["ended"]:
            took = f" {task['ended'] - task['started']:.2f}s"
        reused = " (reused)" if task["cached"] else ""
        line = (
            f"[{STYLE.get(task['state'], '')}]{SYMBOL.get(task['state'], '')} {task['name']}[/] "
            f"{task['state']}{reused} attempts={task['attempts']}{took}"
        )
        node = branch.add(line)
        if task["error"]:
            node.add(f"[red]{_escape(task['error'])[:500]}[/]")
        elif task["reason"]:
            node.add(f"[dim]{_escape(task['reason'])}[/]")
        if task["output"] is not None:
            text = json.dumps(_readable(task["output"], project.artifacts_url), default=str)
            node.add(f"[dim]output: {_escape(text[:300])}{'…' if len(text) > 300 else ''}[/]")
        for attempt in by_task.get(task["name"], []) if task["attempts"] > 1 else []:
            node.add(
                f"attempt {attempt['attempt']}: {attempt['state']}"
                + (
                    f" ({attempt['exit_reason']}) {_escape(attempt['error'] or '')[:200]}"
                    if attempt["error"]
                    else ""
                )
            )
    out.print(tree)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@app.command()
def logs(
    run_id: Annotated[str, typer.Argument(metavar="RUN")],
    task: Annotated[
        str | None, typer.Argument(help="One task, e.g. 'train[model=cnn]'; all when left out.")
    ] = None,
    attempt: Annotated[int | None, typer.Option(help="Which attempt (default: the last).")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing while the run goes on.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Print (or follow) the stdout and stderr that tasks wrote."""
    from fanflow.engine.runner import file_name

    project = _project(home)
    row = _run_row(project, run_id)
    folder = Path(row.home or project.home) / "logs" / row.id
    tasks = project.store.tasks(row.id)
    if task is not None:
        chosen = [t for t in tasks if t["name"] == task]
        if not chosen:
            names = ", ".join(t["name"] for t in tasks[:10])
            raise UsageError(
                f"run {row.id} has no task {task!r} (tasks: {names}{', …' if len(tasks) > 10 else ''})"
            )
        tasks = chosen
    printed = False
    for t in tasks:
        number = attempt or max(t["attempts"], 1)
        for stream in ("out", "err"):
            path = folder / f"{file_name(t['name'])}.{number}.{stream}"
            if path.exists() and path.stat().st_size:
                if len(tasks) > 1 or stream == "err":
                    err.print(f"[bold]── {_escape(t['name'])} (attempt {number}, std{stream}) ──[/]", markup=True)
                sys.stdout.write(path.read_text(encoding="utf-8", errors="replace"))
                sys.stdout.flush()
                printed = True
    if follow:
        _follow(project, row.id, folder, tasks, file_name)
    elif not printed:
        err.print("no output")


def _follow(project, run_id: str, folder: Path, tasks: list[dict], file_name) -> None:
    offsets: dict[Path, int] = {}
    names = {t["name"] for t in tasks}
    for path in folder.glob("*.out"):
        offsets[path] = path.stat().st_size
    try:
        while True:
            for path in sorted(folder.glob("*.*")):
                if path.suffix not in (".out", ".err"):
                    continue
                if len(names) == 1 and not path.name.startswith(file_name(next(iter(names))) + "."):
                    continue
                size = path.stat().st_size
                seen = offsets.get(path, 0)
                if size > seen:
                    with open(path, encoding="utf-8", errors="replace") as f:
                        f.seek(seen)
                        sys.stdout.write(f.read())
                        sys.stdout.flush()
                    offsets[path] = size
            row = project.store.get_run(run_id)
            if row is None or row.state != "running":
                return
            time.sleep(0.5)
    except KeyboardInterrupt:
        return


@app.command()
def gc(
    keep: Annotated[int, typer.Option(help="Keep this many most recent runs.")] = 20,
    older_than: Annotated[
        str | None, typer.Option(help="Only drop runs older than this (e.g. 7d, 12h).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; delete nothing.")] = False,
    home: HomeOption = None,
) -> None:
    """Drop old runs, their logs, and the artifacts no remaining run or cache entry uses."""
    from fanflow.stores.gc import collect

    project = _project(home)
    try:
        report = collect(project, keep=keep, older_than=older_than, dry_run=dry_run)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    verb = "would drop" if dry_run else "dropped"
    out.print(
        f"{verb} {len(report.runs)} runs and {len(report.artifacts)} artifacts "
        f"({report.bytes / 1e6:.1f} MB); kept {report.kept_runs} runs"
    )
    for run_id in report.runs:
        out.print(f"  run {run_id}")


def _register_kubernetes_commands() -> None:
    from fanflow.cli.k8s import check_quorum_command, exec_command, export_app

    app.add_typer(export_app, name="export")
    app.command("exec")(exec_command)
    app.command("check-quorum")(check_quorum_command)


_register_kubernetes_commands()


def _version_callback(value: bool) -> None:
    if value:
        from fanflow import __version__

        print(f"fanflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


if __name__ == "__main__":
    main()
