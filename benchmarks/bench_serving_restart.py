"""Kill a model server under load, with the servers and the gateway run as service steps of a
workflow: every request still gets an answer (degraded while the member is down, never an
error), and the engine brings the member back on the same address. Prints the figures.

    python benchmarks/bench_serving_restart.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fanflow.project import Project  # noqa: E402
from fanflow.spec.loader import load_workflow  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="fanflow-restart-") as folder:
        project = Project(Path(folder) / ".fanflow")
        result = project.run(load_workflow(HERE / "serving_restart.yaml"), cache=False)
        project.close()
    if result.state != "succeeded":
        print(f"the run {result.state}: {result.error}")
        return 1
    figures = result.outputs("load")[0]
    print(json.dumps(figures, indent=2))
    print(f"\n{figures['clients']} clients for {figures['seconds']} s against the gateway; member "
          f"{figures['member']} killed (pid {figures.get('killed_pid')}) at 1.5 s:")
    print(f"  answers {figures['answers']}, errors {figures['errors']}, degraded {figures['degraded']}; "
          f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms")
    back = figures.get("back_after_s")
    print(f"  the member was ready again on the same address after {back} s (new pid {figures.get('new_pid')})"
          if back is not None else "  the member did not come back within 30 s")
    return 0 if figures["errors"] == 0 and back is not None and back <= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
