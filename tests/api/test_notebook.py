"""A flow defined in notebook cells, run in a real Jupyter kernel (nbclient): its steps' code is
shipped to the workers, its outputs read from the Run object, and editing one cell re-runs
only that step and what depends on it."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).with_name("notebooks")

pytestmark = pytest.mark.timeout(300)


def _printed(cell) -> dict:
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    return json.loads(text.strip().splitlines()[-1])


def _edit(cell, old: str, new: str) -> None:
    assert old in cell.source
    cell.source = cell.source.replace(old, new)


def test_a_flow_defined_in_cells_runs_and_an_edited_cell_reruns_only_its_step_and_dependants(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "analysis").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'analysis'\n")
    for name in ("flow_in_cells.ipynb", "nbhelpers.py"):
        shutil.copy(NOTEBOOKS / name, project / "analysis" / name)
    monkeypatch.delenv("FANFLOW_HOME", raising=False)  # the store is found at the project's root
    nb = nbformat.read(project / "analysis" / "flow_in_cells.ipynb", as_version=4)
    square, total, run_cell, report = nb.cells[3], nb.cells[4], nb.cells[5], nb.cells[6]

    client = NotebookClient(nb, km=KernelManager(kernel_name="python3"), timeout=240,
                            resources={"metadata": {"path": str(project / "analysis")}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        first = _printed(report)
        assert first["state"] == "succeeded" and first["square_type"] == "Scored"
        assert first["total"] == {"sum": 1 + 4 + 9 + 3 * 10, "xs": [1, 2, 3]} and first["ys"] == [11, 14, 19]
        assert first["ran"] == ["numbers", "square[x=1]", "square[x=2]", "square[x=3]", "total"]
        shown = next(o for o in run_cell.outputs if o.get("output_type") == "execute_result")["data"]
        assert "<table" in shown["text/html"] and "square[x=2]" in shown["text/html"]
        assert ">succeeded</b>" in shown["text/html"] and shown["text/plain"].startswith("<Run ")

        # Edit the square cell and run it again, then the run: square and total run, numbers is reused.
        _edit(square, "// 2 + OFFSET", "// 2 + OFFSET * 2")
        for index in (3, 5, 6):
            client.execute_cell(nb.cells[index], index)
        second = _printed(report)
        assert second["ran"] == ["square[x=1]", "square[x=2]", "square[x=3]", "total"]
        assert second["ys"] == [21, 24, 29] and second["total"]["sum"] == 74

        # A comment and new line breaks in the total cell change nothing that runs.
        _edit(total, "    return {", "    # the fan-in\n    return {\n        ")
        for index in (4, 5, 6):
            client.execute_cell(nb.cells[index], index)
        assert _printed(report)["ran"] == [] and _printed(report)["total"]["sum"] == 74

    assert (project / ".fanflow" / "runs.db").is_file()  # one store, at the project's root
    shipped = list((project / ".fanflow" / "artifacts" / "objects").glob("*/*.py"))
    assert len(shipped) >= 4 and all("def " in p.read_text() for p in shipped)
