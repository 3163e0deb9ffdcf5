"""The live view and ``fanflow show`` as a terminal shows them: the rendered bytes go through a
real terminal emulator (pyte) of 80 columns, as in a user's terminal."""

import io
import os
import pty
import select
import shutil
import subprocess
import sys
import time

import pyte
from rich.console import Console

from fanflow.cli.live import RunView
from fanflow.vocab.states import Event, State
from tests.conftest import ROOT, cli, write

STEPS = ROOT / "tests" / "engine" / "flowsteps.py"
LONG = "a_model_name_long_enough_that_the_old_table_wrapped_it"


def screen_of(render, columns: int = 80, lines: int = 15) -> list[str]:
    """What a terminal of ``columns`` x ``lines`` shows after receiving what Rich rendered."""
    out = io.StringIO()
    Console(file=out, width=columns, height=lines, force_terminal=True, color_system="standard").print(render)
    screen = pyte.Screen(columns, lines)
    pyte.Stream(screen).feed(out.getvalue().replace("\n", "\r\n"))
    return [line.rstrip() for line in screen.display]


def view_of(names, running=(), failed=(), lines: int = 15) -> RunView:
    view = RunView("wide · run 20261129-101010-abcd", Console(width=80, height=lines, force_terminal=True))
    events = [Event(n, n.split("[")[0], State.PENDING, 0, 0.0, {}) for n in names]
    for n in names:
        if n in running:
            events.append(Event(n, n.split("[")[0], State.RUNNING, 1, 1.0, {}))
        elif n in failed:
            events += [Event(n, n.split("[")[0], State.RUNNING, 1, 1.0, {}),
                       Event(n, n.split("[")[0], State.FAILED, 1, 2.0, {"error": "ValueError: boom " * 20})]
        else:
            events += [Event(n, n.split("[")[0], State.RUNNING, 1, 1.0, {}),
                       Event(n, n.split("[")[0], State.SUCCEEDED, 1, 2.0, {"output": 1})]
    view(events)
    return view


def test_in_a_short_narrow_terminal_running_tasks_come_first_and_names_stay_whole():
    names = [f"train[model={LONG}_{i}]" for i in range(20)]
    view = view_of(names, running={names[15], names[17]}, failed={names[3]})
    shown = screen_of(view.render())
    assert shown[0].startswith("wide · run 20261129-101010-abcd  18/20 done")
    task_lines = [line for line in shown[1:] if "train[" in line]
    assert task_lines[0].startswith(f"▶ {names[15]}") and task_lines[1].startswith(f"▶ {names[17]}")
    assert task_lines[2].startswith(f"✗ {names[3]}")
    for line in task_lines:  # each name whole on its line, never broken across two
        assert any(f"{name} " in line or line.endswith(name) for name in names), line


def test_names_are_shown_verbatim_not_read_as_markup():
    names = ["train[model=cnn]", "train[bold]", "serve[/]"]
    view = view_of(names)
    shown = "\n".join(screen_of(view.summary()))
    for name in names:
        assert name in shown


def test_a_hundred_thousand_tasks_fold_into_a_line_per_step_and_only_running_ones_are_kept():
    view = RunView("big · run 20261129-101010-abcd", Console(width=80, height=15, force_terminal=True))
    n = 100_000
    view([Event(f"noop[x={i}]", "noop", State.PENDING, 0, 0.0, {}) for i in range(n)])
    events = []
    for i in range(n - 40):
        events += [Event(f"noop[x={i}]", "noop", State.RUNNING, 1, 1.0, {}),
                   Event(f"noop[x={i}]", "noop", State.SUCCEEDED, 1, 1.5, {"output": i})]
    events += [Event(f"noop[x={i}]", "noop", State.RUNNING, 1, 1.0, {}) for i in range(n - 40, n)]
    view(events)
    assert len(view.views) == 40  # details only for what is running now
    shown = screen_of(view.render())
    assert shown[0].startswith(f"big · run 20261129-101010-abcd  {n - 40}/{n} done")
    assert " ".join(shown[1].split()) == f"noop {n - 40}/{n} ▶ 40 running ✓ {n - 40} succeeded"
    assert sum(1 for line in shown if line.startswith("▶ noop[x=")) >= 10
    written = [line for line in shown if line.strip()]
    assert written[-1].strip().startswith("… and")  # the rest of the running ones, counted


def test_tasks_of_a_large_run_that_have_not_started_are_counted_from_the_step_sizes():
    sizes = {"make": 1, "noop": 50_000, "later": 20_000}
    view = RunView("big · run 20261129-101010-abcd", Console(width=80, height=15, force_terminal=True),
                   sizes=lambda: sizes)
    events = [Event("make", "make", state, 1, 0.0, {}) for state in (State.PENDING, State.RUNNING, State.SUCCEEDED)]
    events += [Event(f"noop[x={i}]", "noop", State.PENDING, 0, 0.0, {}) for i in range(sizes["noop"])]
    events += [Event(f"later[x={i}]", "later", State.PENDING, 0, 0.0, {}) for i in range(sizes["later"])]
    events += [Event(f"noop[x={i}]", "noop", State.RUNNING, 1, 1.0, {}) for i in range(3)]
    view(events)
    assert len(view.states) < 40  # no record for each task that is only waiting
    shown = [" ".join(line.split()) for line in screen_of(view.render())]
    assert shown[0].startswith("big · run 20261129-101010-abcd 1/70001 done")
    assert "noop 0/50000 ▶ 3 running · 49997 pending" in shown
    assert "later 0/20000 · 20000 pending" in shown


def test_fanflow_run_in_an_80_column_terminal_prints_whole_names(tmp_path):
    shutil.copy(STEPS, tmp_path / "flowsteps.py")
    write(tmp_path, "wide.yaml", f"""
        name: wide
        steps:
          numbers: {{uses: flowsteps:numbers, with: {{n: 3}}}}
          square:
            uses: flowsteps:square
            fan_out: {{x: "${{numbers}}", label: [{LONG}]}}
            with: {{x: "${{item.x}}"}}
        """)
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    env = {**os.environ, "COLUMNS": "80", "LINES": "15", "TERM": "xterm"}
    process = subprocess.Popen([sys.executable, "-m", "fanflow.cli.main", "run", "wide.yaml", "--home",
                                str(tmp_path / "home")], cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave,
                               env=env)
    os.close(slave)
    screen = pyte.HistoryScreen(80, 15, history=200)
    stream = pyte.ByteStream(screen)
    while True:
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            if process.poll() is not None:
                break
            continue
        except OSError:
            break
        if not data:
            break
        stream.feed(data)
    process.wait(60)
    os.close(master)
    assert process.returncode == 0
    history = ["".join(char.data for char in line.values()).rstrip() for line in screen.history.top]
    text = history + [line.rstrip() for line in screen.display]
    for x in (1, 2, 3):
        name = f"square[x={x},label={LONG}]"
        assert any(name in line for line in text), "\n".join(text)


def test_show_folds_a_large_step_and_keeps_its_notable_tasks(tmp_path):
    shutil.copy(STEPS, tmp_path / "flowsteps.py")
    write(tmp_path, "many.yaml", """
        name: many
        on_failure: continue
        steps:
          numbers: {uses: flowsteps:numbers, with: {n: 30}}
          square:
            uses: flowsteps:square
            fan_out: {x: "${numbers}"}
            with: {x: "${item.x}", fail_on: [7]}
        """)
    home = tmp_path / "home"
    run = cli("run", "many.yaml", "--home", home, cwd=tmp_path)
    assert run.returncode == 1
    run_id = run.stderr.split("run ", 1)[1].split()[0]
    shown = cli("show", run_id, "--home", home, env={"COLUMNS": "80"}, check=True).stdout
    lines = shown.splitlines()
    assert any("square: 30 tasks  ✓ 29 succeeded  ✗ 1 failed" in line for line in lines), shown
    assert any("square[x=7] failed attempts=1" in line for line in lines), shown
    assert "square[x=8]" not in shown  # a branch that simply succeeded is counted, not listed
    assert "ValueError: cannot square 7" in shown
    assert any(run_id in line for line in lines[:1])


def test_a_running_task_that_reports_shows_a_bar_its_count_and_first_metric_whole_at_80_columns():
    from fanflow.vocab.progress import Progress

    names = ["train[model=cnn_wide_motion]", "train[model=logistic]", "ingest"]
    view = view_of(names, running=set(names[:2]))
    reported = {names[0]: Progress(1, done=3, total=8, unit="epochs", metrics={"val": 0.8125, "loss": 0.2134,
                                                                                 "val_loss": 0.3}),
                names[1]: Progress(1, done=None, total=None, metrics={"val": 0.5}, message="fitting round 2")}
    view.progress = reported.get
    shown = screen_of(view.render())
    cnn = next(line for line in shown if line.startswith(f"▶ {names[0]}"))
    bar = cnn.split(names[0])[1].split(" 3/8 epochs")[0].strip()
    assert len(bar) >= 3 and bar.startswith("█") and bar.endswith("░") and set(bar) <= set("█▏▎▍▌▋▊▉░"), cnn
    assert "val 0.812" in cnn and len(cnn) <= 80
    logistic = next(line for line in shown if line.startswith(f"▶ {names[1]}"))
    assert "running" in logistic and "val 0.5  f" in logistic  # no count, no bar; the message follows


def test_fanflow_run_shows_a_bar_with_the_unit_and_latest_metrics_while_a_step_reports(tmp_path):
    write(tmp_path, "reportsteps.py", """
        import time
        from pathlib import Path

        import fanflow


        def train(epochs: int, gate: str) -> int:
            for epoch in range(1, epochs + 1):
                fanflow.progress(epoch, epochs, unit="epochs", val=epoch / 8, loss=1 / epoch)
            while not Path(gate).exists():
                time.sleep(0.02)
            return epochs
        """)
    gate = tmp_path / "gate"
    write(tmp_path, "bars.yaml", f"""
        name: bars
        steps:
          train:
            uses: reportsteps:train
            fan_out: {{model: [cnn_wide_motion]}}
            with: {{epochs: 4, gate: "{gate}"}}
        """)
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "80", "LINES": "24", "TERM": "xterm"}
    process = subprocess.Popen([sys.executable, "-m", "fanflow.cli.main", "run", "bars.yaml", "--home",
                                str(tmp_path / "home")], cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave,
                               env=env)
    os.close(slave)
    screen = pyte.Screen(80, 24)
    stream = pyte.ByteStream(screen)
    seen, deadline = None, time.time() + 120
    try:
        while seen is None:  # until the bar is on the screen, with the task still running
            assert time.time() < deadline, "no bar came:\n" + "\n".join(screen.display)
            if not select.select([master], [], [], 1)[0]:
                continue
            data = os.read(master, 65536)
            assert data, "the run ended before its bar was seen"
            stream.feed(data)
            seen = next((line for line in screen.display if "4/4 epochs" in line and "val 0.5" in line), None)
    finally:
        gate.touch()
    assert seen.startswith("▶ train[model=cnn_wide_motion]  ██████ 4/4 epochs"), "\n".join(screen.display)
    assert seen.split("4/4 epochs")[1].split()[2:] == ["val", "0.5", "loss", "0.25"], seen
    while True:
        try:
            if not os.read(master, 65536):
                break
        except OSError:
            break
    assert process.wait(60) == 0
    os.close(master)
