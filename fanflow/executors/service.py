"""Entry point of a service process: ``python -m fanflow.executors.service SPEC.json``.

The step function serves until it is stopped; it calls ``fanflow.runtime.announce`` once it
is ready, and the executor watches for that."""

from __future__ import annotations

import json
import sys

from fanflow.executors.base import TaskSpec
from fanflow.executors.processes import guard_task_tree
from fanflow.executors.worker import call_step, describe, set_task_environment


def main(argv: list[str]) -> int:
    guard_task_tree()
    with open(argv[0], encoding="utf-8") as f:
        spec = TaskSpec(**json.load(f))
    set_task_environment(spec)
    try:
        call_step(spec)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        print(f"fanflow: service {spec.task} failed: {describe(exc)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
