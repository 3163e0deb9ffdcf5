"""Runs ``fanflow validate`` on each file given, in this one process, through the command
line's own entry point (``fanflow.cli.main:main``, what the ``fanflow`` script calls), and
prints one JSON line per file: exit code, stdout, stderr, seconds, and the peak memory of
the process so far. Starting Python once for many files keeps the corpus quick to check.

    python -m tests.spec.corpus_driver FILE...
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import sys
import time


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
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(paths: list[str]) -> None:
    import fanflow.cli.main  # noqa: F401  (imported once, before the first file is timed)

    for path in paths:
        print(json.dumps(validate(path)), file=sys.__stdout__, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
