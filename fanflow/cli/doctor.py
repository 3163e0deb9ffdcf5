"""``fanflow doctor``: check a project's stores (the run store's database and every artifact)
and, with ``--repair``, repair what can be repaired."""

from __future__ import annotations

from typing import Annotated

import typer

from fanflow.cli.common import HomeOption, err, escape, out


def doctor(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Move a damaged run store aside and keep what can be read in a new one; drop cache "
            "entries whose artifacts are gone.",
        ),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Verify the run store and every artifact; damaged artifacts are moved to quarantine.
    Exits 0 when everything is sound, 1 when something was found."""
    from fanflow.project import Project
    from fanflow.stores.doctor import examine

    project = Project(home)
    report = examine(project.db_url, project.artifacts_url, repair=repair)
    if not report.db_problems:
        out.print(f"run store {escape(report.db)}: ok")
    else:
        first = report.db_problems[0]
        more = f" (and {len(report.db_problems) - 1} more problems)" if len(report.db_problems) > 1 else ""
        out.print(f"[red]run store {escape(report.db)}: {escape(first)}{more}[/]", soft_wrap=True)
        if report.db_repair:
            out.print(f"  repaired: {escape(report.db_repair)}", soft_wrap=True)
        else:
            out.print("  `fanflow doctor --repair` moves it aside and keeps what can still be read")
    verdict = "ok" if not report.damaged else f"[red]{len(report.damaged)} damaged[/], moved to quarantine"
    out.print(
        f"artifacts {escape(project.artifacts_url)}: {report.objects} objects "
        f"({report.bytes / 1e6:.1f} MB) hashed: {verdict}",
        soft_wrap=True,
    )
    for damaged in report.damaged:
        out.print(f"  {damaged.digest}{damaged.suffix} -> {escape(str(damaged.quarantined))}", soft_wrap=True)
    if report.damaged:
        out.print("  the steps that made them run again when their outputs are next needed")
    if report.stale_cache:
        done = "dropped" if report.cache_dropped else "`fanflow doctor --repair` drops them"
        out.print(f"cache: {len(report.stale_cache)} entries point to missing artifacts ({done})")
    if report.temp_files:
        out.print(
            f"temporary files: {report.temp_files} left by unfinished writes "
            f"({report.temp_bytes / 1e6:.1f} MB): `fanflow gc` removes them"
        )
    if not report.healthy:
        err.print("problems found" + (" and repaired where possible" if repair else ""))
    raise typer.Exit(0 if report.healthy else 1)
