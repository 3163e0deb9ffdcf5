"""Running workflows: ``fanflow run``, ``resume`` and ``serve``."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fanflow.cli.common import HomeOption, err, escape, load, open_project, out, parse_params
from fanflow.executors.base import Executor
from fanflow.stores.errors import RunLeased, RunStoreError


def run(
    workflow: Annotated[Path, typer.Argument(help="A workflow file (.yaml or .py).")],
    param: Annotated[list[str] | None, typer.Option("-p", "--param", help="KEY=VALUE, repeatable.")] = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="One of the workflow's named parameter sets (see describe); -p overrides it."),
    ] = None,
    executor: Annotated[str, typer.Option(help="Where tasks run: local or ray.")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (with --executor ray).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run every task, reusing nothing.")] = False,
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep services up after the run until Ctrl-C.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the run's result as JSON.")] = False,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Also copy every output here, under readable names (STEP/NAME.EXT)."),
    ] = None,
    ui: Annotated[
        bool, typer.Option("--ui", help="Also serve the web UI on 127.0.0.1 (up until Ctrl-C after the run).")
    ] = False,
    ui_port: Annotated[int, typer.Option(help="The web UI's port (with --ui; 0: a free one).")] = 8765,
    home: HomeOption = None,
) -> None:
    """Run a workflow and show every task as it goes."""
    from fanflow.spec.presets import apply_preset

    with _early_workers(executor) as workers:
        spec = apply_preset(load(workflow, home), preset)
        if preset is not None:
            description = spec.presets[preset].description
            err.print(f"[bold]preset {escape(preset)}[/]" + (f": {escape(description)}" if description else ""),
                      markup=True, soft_wrap=True)
        _execute(
            spec,
            parse_params(param),
            executor=workers or executor,
            address=address,
            cache=not no_cache,
            serve=serve,
            json_output=json_output,
            out_dir=out_dir,
            home=home,
            ui_port=ui_port if ui else None,
        )


@contextlib.contextmanager
def _early_workers(executor: str):
    """The local executor with its worker processes starting now, so that they get ready
    while the workflow is read and the run recorded (a worker takes a tenth of a second to
    start); released however the command ends. None for another executor (Ray starts when
    the run does: there is no point in starting it for a workflow that turns out invalid)."""
    if executor != "local":
        yield None
        return
    from fanflow.executors import create_executor

    workers = create_executor("local")
    workers.start()
    try:
        yield workers
    finally:
        workers.close()


def _execute(
    spec,
    params: dict[str, Any],
    *,
    home: Path | None,
    executor: str | Executor = "local",
    address: str | None = None,
    cache: bool = True,
    serve: bool = False,
    json_output: bool = False,
    out_dir: Path | None = None,
    resume: str | None = None,
    ui_port: int | None = None,
) -> None:
    from fanflow.cli.live import RunView

    project = open_project(home)
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
    view.sizes = runner.core.sizes
    view.progress = runner.progress.latest
    web = None
    if ui_port is not None:
        from fanflow.cli.ui import start_beside

        web = start_beside(runner.run_id, home, ui_port)
    with view:
        try:
            result = runner.run()
        except RunStoreError as exc:
            _record_failure(project, runner.run_id, exc)
            raise
    err.print(view.summary())
    _report(result, runner, project, json_output)
    if out_dir is not None:
        export(project, result.run_id, out_dir)
    if serve and result.state == "succeeded" and result.services:
        _keep_serving(runner, result)
    elif web is not None:
        wait_for_interrupt(f"the web UI is still up at {web.url}/runs/{result.run_id}")
    if web is not None:
        web.stop()
    project.close()
    raise typer.Exit(0 if result.state == "succeeded" else (130 if result.state == "cancelled" else 1))


def _record_failure(project, run_id: str, exc: Exception) -> None:
    """Mark the run failed when its store failed under it (a full disk may refuse even this:
    the run then reads as interrupted, and resumes like one)."""
    if isinstance(exc, RunLeased):
        return
    with contextlib.suppress(Exception):
        project.store.finish(run_id, "failed", str(exc), time.time())


def _report(result, runner, project, json_output: bool) -> None:
    from fanflow.stores.artifacts import ArtifactStore
    from fanflow.stores.values import locations
    from fanflow.vocab.manifest import SUMMARY_KEY
    from fanflow.vocab.states import OK

    artifacts = ArtifactStore(project.artifacts_url)
    tasks = result.tasks
    counts, cached = tasks.counts()
    leaves = [name for name, s in runner.plan.steps.items() if not s.downstream]
    results = {}
    for name in leaves:
        outputs = [locations(t.output, artifacts) for t in tasks.of_step(name) if t.state in OK]
        if outputs:
            fanned = bool(runner.plan.steps[name].step.fan_out)
            results[name] = outputs if fanned else outputs[0]
    # Reading the run back costs a pass over every task row: only a run that has summaries pays it.
    wants_summary = any(isinstance(output, dict) and SUMMARY_KEY in output for output in tasks.outputs())
    summaries = {}
    if wants_summary:
        from fanflow.results import Run

        summaries = Run.read(project, result.run_id).summaries()
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
                    "summaries": summaries,
                    "results": results,
                },
                indent=2,
                default=str,
            )
        )
        return
    if summaries:
        from rich.markdown import Markdown

        for text in summaries.values():
            out.print(Markdown(text))
    for name, value in results.items():
        if _show_report(name, value):
            continue
        text = json.dumps(value, indent=2, default=str)
        if len(text) > 4000:
            text = text[:4000] + "\n…"
        out.print(f"[bold]{escape(name)}[/] =", text, markup=True, highlight=False, soft_wrap=True)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    style = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}[result.state]
    err.print(
        f"[bold {style}]run {result.run_id} {result.state}[/] in {result.duration:.1f}s "
        f"({len(tasks)} tasks: {summary}" + (f"; {cached} reused" if cached else "") + ")",
        markup=True,
        soft_wrap=True,
    )
    if result.error:
        err.print(f"[red]{escape(result.error)}[/]", markup=True, soft_wrap=True)
    if result.state != "succeeded":
        err.print(f"inspect: fanflow show {result.run_id}   resume: fanflow resume {result.run_id}")


def export(project, run_id: str, out_dir: Path) -> None:
    """Copy a run's outputs under readable names, and say where."""
    from fanflow.results import Run

    written = Run.read(project, run_id).export(out_dir)
    size = sum(f.size for f in written)
    err.print(f"outputs: {len(written)} files ({size / 1e6:.1f} MB) under {out_dir}/", soft_wrap=True)


def _show_report(step: str, value: Any) -> bool:
    """A result that holds a Markdown report (``{"markdown": file, ...}``) is shown as the
    report itself, with where its other files are."""
    if not (
        isinstance(value, dict)
        and isinstance(value.get("markdown"), str)
        and value["markdown"].endswith(".md")
    ):
        return False
    path = Path(value["markdown"])
    if not path.is_file():
        return False
    from rich.markdown import Markdown

    out.print(Markdown(path.read_text(encoding="utf-8")))
    for key, item in value.items():
        if key != "markdown" and isinstance(item, str) and Path(item).is_file():
            out.print(f"[dim]{escape(step)} {key}: {escape(item)}[/]", markup=True, soft_wrap=True)
    return True


def wait_for_interrupt(why: str) -> None:
    """Say ``why`` this command goes on, then wait for Ctrl-C (or SIGTERM)."""
    import signal

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    err.print(f"{why}  (Ctrl-C to stop)", soft_wrap=True)
    stop.wait()
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _keep_serving(runner, result) -> None:
    for name, endpoint in result.services.items():
        url = endpoint.get("url") if isinstance(endpoint, dict) else endpoint
        out.print(f"[bold green]serving[/] {escape(name)}: {url}", markup=True)
    err.print("press Ctrl-C to stop")
    stop = threading.Event()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runner.supervise(stop)
    runner.stop_services()


def resume(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run to continue.")],
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Reuse only the resumed run's own tasks.")
    ] = False,
    executor: Annotated[str, typer.Option(help="Where tasks run: local or ray.")] = "local",
    home: HomeOption = None,
) -> None:
    """Continue a failed, cancelled or interrupted run: finished tasks are reused."""
    spec, params, previous = open_project(home).resumable(run_id)
    _execute(spec, params, home=home, executor=executor, cache=not no_cache, resume=previous)


def serve(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="A finished run with service steps.")],
    home: HomeOption = None,
) -> None:
    """Bring a finished run's services (its selected models' servers and the gateway) back up
    from its artifacts, without retraining; print their URLs and serve until Ctrl-C."""
    spec, params, previous = open_project(home).servable(run_id)
    _execute(spec, params, home=home, serve=True, resume=previous)
