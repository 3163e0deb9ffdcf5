"""``fanflow ui``: the web UI of the project's runs (``fanflow.ui``), on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fanflow.cli.common import HomeOption, UsageError, err, escape

DEFAULT_PORT = 8765
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def ui(
    port: Annotated[int, typer.Option(help="The port to serve on (0: a free one).")] = DEFAULT_PORT,
    host: Annotated[
        str, typer.Option(help="The address to bind. Anything but loopback lets other machines in.")
    ] = "127.0.0.1",
    workflow: Annotated[
        list[Path] | None, typer.Option("--workflow", "-w", help="A workflow file the launch page offers; repeatable.")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Serve the web UI: watch runs live, browse their results, launch and compare runs, and
    tag clips with a run's served models. Stops on Ctrl-C."""
    from fanflow.cli.run import wait_for_interrupt
    from fanflow.ui.app import Served, create_app

    for path in workflow or []:
        if not path.is_file():
            raise UsageError(f"--workflow {path}: no such file")
    if host not in LOOPBACK:
        err.print(f"[yellow]warning:[/] serving on {escape(host)}: other machines can reach this UI "
                  "and start runs from it", markup=True)
    try:
        served = Served(create_app(home, workflows=list(workflow or []), hosts={host}), host, port)
    except OSError as exc:
        raise UsageError(f"{exc} (try --port 0 for a free port)") from None
    wait_for_interrupt(f"fanflow UI at {served.url}")
    served.stop()


def start_beside(run_id: str, home: Path | None, port: int):
    """The UI in a thread of this process (``fanflow run --ui``), showing ``run_id``; returns
    it, to stop it later."""
    from fanflow.ui.app import Served, create_app

    try:
        served = Served(create_app(home), port=port)
    except OSError as exc:
        raise UsageError(f"--ui: {exc} (try --ui-port 0)") from None
    err.print(f"fanflow UI: {served.url}/runs/{run_id}", soft_wrap=True)
    return served
