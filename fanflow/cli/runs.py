"""Inspecting runs: ``fanflow runs``, ``show``, ``logs`` and ``gc``."""

from __future__ import annotations

import codecs
import glob
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from fanflow.cli.common import HomeOption, UsageError, err, escape, open_project, out
from fanflow.vocab.progress import Progress, summary


def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many, newest first.")] = 20,
    workflow: Annotated[str | None, typer.Option(help="Only this workflow's runs.")] = None,
    home: HomeOption = None,
) -> None:
    """List recent runs."""
    project = open_project(home)
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


FOLD_OVER = 20  # a step with more tasks than this shows one line of counts, and its notable tasks
NOTABLE_SHOWN = 20  # of a folded step: tasks that failed, were retried or did not finish

RunArgument = Annotated[str, typer.Argument(metavar="RUN", help="A run's id, a unique prefix of it, or 'latest'.")]


def _task_named(tasks: list[dict], name: str, run_id: str) -> dict:
    for task in tasks:
        if task["name"] == name:
            return task
    close = [t["name"] for t in tasks if t["name"].startswith(name)]
    if len(close) == 1:
        return next(t for t in tasks if t["name"] == close[0])
    listed = close or [t["name"] for t in tasks]
    more = ", …" if len(listed) > 10 else ""
    raise UsageError(f"run {run_id} has no task {name!r} (tasks: {', '.join(listed[:10])}{more})")


def show(
    run_id: RunArgument,
    task: Annotated[
        str | None, typer.Argument(help="One task, e.g. 'train[model=cnn]': its attempts, error and traceback.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    home: HomeOption = None,
) -> None:
    """Show a run's tasks: states, attempts, durations, reuse and outputs; or one task whole."""
    project = open_project(home)
    row = project.get_run(run_id)
    if task is not None:
        _show_task(project, row, _task_named(project.store.tasks(row.id), task, row.id), json_output)
        return
    progress = project.store.progress(row.id)
    if json_output:
        tasks = project.store.tasks(row.id)
        attempts = project.store.attempts(row.id)
        for task in tasks:
            task["progress"] = progress[task["name"]].to_dict() if task["name"] in progress else None
        print(json.dumps({"run": row.__dict__, "tasks": tasks, "attempts": attempts}, indent=2, default=str))
        return
    from fanflow.cli.live import STYLE
    from fanflow.stores.artifacts import ArtifactStore

    artifacts = ArtifactStore(project.artifacts_url)
    duration = f"{row.duration:.1f}s" if row.duration is not None else "-"
    title = Text.assemble((row.workflow, "bold"), f" run {row.id}: ", (row.state, STYLE.get(row.state, "red")),
                          f" in {duration}")
    if row.resumed_from:
        title.append(f" (resumes {row.resumed_from})")
    tree = Tree(_unwrapped(title))
    if row.params:
        tree.add(Text("params: " + json.dumps(row.params, default=str)))
    for step, counts in project.store.step_counts(row.id).items():
        total = sum(counts.values())
        if total <= FOLD_OVER:
            branch = tree.add(Text(step, style="bold"))
            shown = project.store.tasks(row.id, step=step)
        else:
            branch = tree.add(_counts_line(step, counts))
            shown = project.store.tasks(row.id, step=step, notable=True, limit=NOTABLE_SHOWN + 1)
            if len(shown) > NOTABLE_SHOWN:
                shown = shown[:NOTABLE_SHOWN]
                more = total - counts.get("succeeded", 0) - NOTABLE_SHOWN
                branch.add(Text(f"… and {more} more that did not simply succeed", style="dim"))
        for task in shown:
            node = _task_node(branch, task, project, row.id, artifacts)
            if task["name"] in progress:
                node.add(_progress_line(progress[task["name"]]))
    out.print(tree)


def _unwrapped(text: Text) -> Text:
    """A line that is never wrapped (names and run ids stay whole, to be copied): what does
    not fit the terminal is cut at its end."""
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def _counts_line(step: str, counts: dict[str, int]) -> Text:
    from fanflow.cli.live import STYLE, SYMBOL

    line = Text.assemble((step, "bold"), f": {sum(counts.values())} tasks")
    for state in ("running", "retrying", "serving", "succeeded", "failed", "skipped", "cancelled", "pending"):
        if counts.get(state):
            line.append(f"  {SYMBOL[state]} {counts[state]} {state}", style=STYLE[state])
    return _unwrapped(line)


def _task_node(branch, task: dict, project, run_id: str, artifacts):
    from fanflow.cli.live import STYLE, SYMBOL
    from fanflow.stores.values import locations

    took = ""
    if task["started"] and task["ended"]:
        took = f" {task['ended'] - task['started']:.2f}s"
    reused = " (reused)" if task["cached"] else ""
    style = STYLE.get(task["state"], "")
    node = branch.add(_unwrapped(Text.assemble(
        (f"{SYMBOL.get(task['state'], '')} {task['name']}", style),
        f" {task['state']}{reused} attempts={task['attempts']}{took}",
    )))
    if task["error"]:
        node.add(Text(task["error"][:500], style="red"))
    elif task["reason"]:
        node.add(Text(task["reason"], style="dim"))
    if task["output"] is not None:
        text = json.dumps(locations(task["output"], artifacts), default=str)
        node.add(Text(f"output: {text[:300]}{'…' if len(text) > 300 else ''}", style="dim"))
    if task["attempts"] > 1:
        for attempt in project.store.attempts(run_id, task["name"]):
            line = f"attempt {attempt['attempt']}: {attempt['state']}"
            if attempt["error"]:
                line += f" ({attempt['exit_reason']}) {(attempt['error'] or '')[:200]}"
            node.add(Text(line))
    return node


def _progress_line(progress: Progress) -> Text:
    """What a task last reported while it ran, on one line (the bar as in the live view)."""
    from fanflow.cli.live import bar

    line = Text("progress: ")
    if progress.fraction is not None:
        line.append(bar(progress.fraction, 10) + " ", style="cyan")
    line.append(summary(progress))
    if len(progress.history) > 1:
        line.append(f"  (history: {len(progress.history)} points)", style="dim")
    return _unwrapped(line)


def _show_task(project, row, task: dict, json_output: bool) -> None:
    from fanflow.cli.live import STYLE
    from fanflow.stores.artifacts import ArtifactStore
    from fanflow.stores.values import locations

    attempts = project.store.attempts(row.id, task["name"])
    if json_output:
        print(json.dumps({"run": row.id, "task": task, "attempts": attempts}, indent=2, default=str))
        return
    took = f" in {task['ended'] - task['started']:.2f}s" if task["started"] and task["ended"] else ""
    out.print(
        f"[bold]{escape(task['name'])}[/] (step {escape(task['step'])}) of run {row.id}: "
        f"[{STYLE.get(task['state'], '')}]{task['state']}[/]{' (reused)' if task['cached'] else ''}{took}",
        soft_wrap=True,
    )
    if task["item"] is not None:
        out.print(f"item: {escape(json.dumps(task['item'], default=str))}", soft_wrap=True)
    if task["reason"]:
        out.print(f"[dim]{escape(task['reason'])}[/]", soft_wrap=True)
    if task["output"] is not None:
        text = json.dumps(locations(task["output"], ArtifactStore(project.artifacts_url)), default=str)
        out.print(f"output: {escape(text[:2000])}{'…' if len(text) > 2000 else ''}", soft_wrap=True)
    for attempt in attempts:
        duration = ""
        if attempt["started"] and attempt["ended"]:
            duration = f" {attempt['ended'] - attempt['started']:.2f}s"
        exit_reason = f" ({attempt['exit_reason']})" if attempt["exit_reason"] else ""
        worker = f" on {attempt['worker']}" if attempt["worker"] else ""
        out.print(f"attempt {attempt['attempt']}: {attempt['state']}{exit_reason}{duration}{worker}")
        if attempt["error"]:
            out.print(f"  [red]{escape(attempt['error'])}[/]", soft_wrap=True)
    failed = [a for a in attempts if a["traceback"]]
    if failed:
        last = failed[-1]
        out.print(f"[bold]traceback (attempt {last['attempt']}):[/]")
        out.print(escape(last["traceback"].rstrip()), soft_wrap=True, markup=True, highlight=False)
    out.print(f"[dim]logs: fanflow logs {row.id} {escape(task['name'])}[/]", soft_wrap=True)


def logs(
    run_id: RunArgument,
    task: Annotated[
        str | None, typer.Argument(help="One task, e.g. 'train[model=cnn]'; all when left out.")
    ] = None,
    attempt: Annotated[int | None, typer.Option(help="Which attempt (default: the last).")] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Keep printing as it is written, until the task (or the run) ends."),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Print (or follow) the stdout and stderr that tasks wrote."""
    from fanflow.engine.runner import file_name
    from fanflow.history import log_folder, log_path

    project = open_project(home)
    row = project.get_run(run_id)
    folder = log_folder(row.home or project.home, row.id)
    tasks = project.store.tasks(row.id)
    if task is not None:
        tasks = [_task_named(tasks, task, row.id)]
    tracebacks = {
        (a["task"], a["attempt"]): a["traceback"] for a in project.store.attempts(row.id) if a["traceback"]
    }
    printed = LogFiles(folder, {t["name"]: file_name(t["name"]) for t in tasks})
    traced = False
    for t in tasks:
        number = attempt or max(t["attempts"], 1)
        for stream in ("out", "err"):
            path = log_path(row.home or project.home, row.id, t["name"], number, stream)
            if path.exists() and path.stat().st_size:
                printed.show(path, header=len(tasks) > 1 or stream == "err")
        traceback = tracebacks.get((t["name"], number))
        if traceback:  # the step's exception, recorded by fanflow rather than printed by the step
            err.print(f"[bold]── {escape(t['name'])} (attempt {number}, traceback) ──[/]", markup=True)
            sys.stderr.write(traceback if traceback.endswith("\n") else traceback + "\n")
            sys.stderr.flush()
            traced = True
    if follow:
        _follow(project, row.id, tasks[0]["name"] if task is not None else None, printed)
    elif not printed.offsets and not traced:
        state = project.store.task_state(row.id, task) if task is not None else None
        if state is not None and state[0] not in ENDED:
            err.print(f"no output yet (to follow it: fanflow logs -f {row.id} '{task}')", markup=False)
        else:
            err.print("no output")


FOLLOW_EVERY = 0.2  # seconds between two looks at the log files
ENDED = ("succeeded", "failed", "skipped", "cancelled")


class LogFiles:
    """The log files of a run's tasks as they are printed: how far each one was printed, and
    which one last. A header on stderr names the task and the stream when asked, and whenever
    the file printed changes."""

    def __init__(self, folder: Path, bases: dict[str, str]):
        self.folder = folder
        self.bases = bases  # task -> the start of its log files' names
        self.names = {base: name for name, base in bases.items()}
        self.offsets: dict[Path, int] = {}
        self._decoders: dict[Path, codecs.IncrementalDecoder] = {}
        self._last: Path | None = None

    def show(self, path: Path, header: bool) -> None:
        """Print what ``path`` holds beyond what was printed of it."""
        seen = self.offsets.get(path, 0)
        try:
            with open(path, "rb") as f:
                f.seek(seen)
                data = f.read()
        except OSError:
            return
        if not data:
            return
        if (header or self._last is not None) and path != self._last:
            base, number, stream = path.name.rsplit(".", 2)
            name = self.names.get(base, base)
            err.print(f"[bold]── {escape(name)} (attempt {number}, std{stream}) ──[/]", markup=True)
        self._last = path
        decoder = self._decoders.setdefault(path, codecs.getincrementaldecoder("utf-8")(errors="replace"))
        sys.stdout.write(decoder.decode(data))
        sys.stdout.flush()
        self.offsets[path] = seen + len(data)

    def files(self, task: str | None) -> list[Path]:
        """The log files of ``task`` (every attempt), or of every task, oldest first."""
        pattern = f"{glob.escape(self.bases[task])}.*.*" if task is not None else "*.*.*"
        found = [p for p in self.folder.glob(pattern) if p.suffix in (".out", ".err")]
        return sorted(found, key=lambda p: p.stat().st_mtime_ns)


def _follow(project, run_id: str, task: str | None, printed: LogFiles) -> None:
    """Print what the task (or every task) writes as it comes, until the task (or the run)
    has ended and all it wrote is printed. Files of earlier attempts already there are not
    printed again; a later attempt's are."""
    for path in printed.files(task):
        printed.offsets.setdefault(path, path.stat().st_size)
    store = project.store
    try:
        while True:
            state = store.task_state(run_id, task) if task is not None else None
            row = store.get_run(run_id)
            ended = (state is not None and state[0] in ENDED) or row is None or row.state != "running"
            for path in printed.files(task):  # after the look at the state: nothing is left behind
                printed.show(path, header=task is None or path.suffix == ".err")
            if ended:
                if state is not None:
                    err.print(f"[dim]── {escape(task)} {state[0]} ──[/]", markup=True)
                return
            time.sleep(FOLLOW_EVERY)
    except KeyboardInterrupt:
        return


def artifacts(
    run_id: RunArgument,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Copy every output here as STEP/NAME.EXT instead of listing them."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """List a run's stored outputs (readable name, size, where the store keeps it), or copy
    them under readable names with --out."""
    from fanflow.cli.run import export
    from fanflow.results import Run
    from fanflow.stores.export import name_files
    from fanflow.vocab.manifest import ARTIFACT_KEY

    project = open_project(home)
    if out_dir is not None:
        export(project, run_id, out_dir)
        return
    run = Run.read(project, run_id)
    store = project.artifacts()
    listed = 0
    for name, task in run.tasks.items():
        for named in name_files(name, task.manifest)[0]:
            ref = named.ref
            where = store.location(ref[ARTIFACT_KEY], ref.get("suffix", ""))
            out.print(f"{escape(str(named.path))}  {ref.get('size', 0) / 1e6:.2f} MB  {escape(where)}", soft_wrap=True)
            listed += 1
    if not listed:
        err.print(f"run {run.id} stored no files (its outputs are plain values: fanflow show {run.id})")


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

    project = open_project(home)
    try:
        report = collect(project, keep=keep, older_than=older_than, dry_run=dry_run)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    verb = "would drop" if dry_run else "dropped"
    out.print(
        f"{verb} {len(report.runs)} runs and {len(report.artifacts)} artifacts "
        f"({report.bytes / 1e6:.1f} MB); kept {report.kept_runs} runs"
    )
    if report.temp_files:
        out.print(
            f"{verb} {len(report.temp_files)} temporary files of unfinished writes "
            f"({report.temp_bytes / 1e6:.1f} MB)"
        )
    for run_id in report.runs:
        out.print(f"  run {run_id}")
