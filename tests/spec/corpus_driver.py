"""Runs ``fanflow validate`` on each file given, in this one process, through the command
line's own entry point (``fanflow.cli.main:main``, what the ``fanflow`` script calls), and
prints one JSON line per file: exit code, stdout, stderr, seconds, and the peak memory of
the process so far. ``--program ARGS...`` instead runs ``fanflow ARGS`` as the program itself
(``python -m fanflow.cli.main``) in this process and prints the same line for it. Starting Python once for many files keeps the corpus quick to check.

    python -m tests.spec.corpus_driver FILE...
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import sys
import time
from pathlib import Path


def validate(path: str) -> dict:
    from fanflow.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["fanflow", "validate", path]
    started = time.perf_counter()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # reported, so the test shows what escaped
            import traceback

            err.write("Traceback (escaped the command line):\n" + traceback.format_exc())
            code = f"raised {type(exc).__name__}"
    return {
        "file": path,
        "code": code,
        "stdout": out.getvalue(),
        "stderr": err.getvalue(),
        "seconds": time.perf_counter() - started,
        "peak_mb": peak_mb(),
    }


def peak_mb() -> float:
    """This process's peak resident memory since it started its program. (getrusage's
    ru_maxrss would not do: Linux carries it across exec, so a child forked from a large
    test process starts with the parent's size.)"""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(paths: list[str]) -> None:
    import fanflow.cli.main  # noqa: F401  (imported once, before the first file is timed)

    for path in paths:
        print(json.dumps(validate(path)), file=sys.__stdout__, flush=True)


def program(args: list[str], report: str) -> None:
    """Run ``fanflow ARGS`` as ``python -m fanflow.cli.main`` does, and write its peak memory
    to ``report`` as it exits."""
    import atexit
    import runpy

    atexit.register(lambda: Path(report).write_text(str(peak_mb()), encoding="ascii"))
    sys.argv = ["fanflow", *args]
    runpy.run_module("fanflow.cli.main", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    if sys.argv[1] == "--program":
        program(sys.argv[3:], sys.argv[2])
    else:
        main(sys.argv[1:])
