"""The layers' import rules, read from the source with ``ast``: lower layers never import
higher ones, and no module imports another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fanflow"

# What each low layer may import from fanflow (itself included).
ALLOWED = {
    "vocab": {"vocab"},
    "spec": {"vocab", "spec"},
    "stores": {"vocab", "stores"},
}


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [alias.name for alias in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_low_layer_imports_only_the_layers_below_it(layer):
    wrong = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for module, _, line in _imports(path):
            parts = module.split(".")
            if parts[0] == "fanflow" and len(parts) > 1 and parts[1] not in ALLOWED[layer]:
                if module == "fanflow" or parts[1] in ("runtime",):
                    continue
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_modules_private_names():
    wrong = []
    for path in _modules():
        for module, names, line in _imports(path):
            if not module.startswith("fanflow"):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private or any(
                part.startswith("_") and not part.startswith("__") for part in module.split(".")
            ):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}: {private}")
    assert not wrong, "\n".join(wrong)


def _importers(target: str, *, outside: str) -> list[str]:
    """Modules not under ``outside`` that import ``target`` (or a module inside it)."""
    found = []
    for path in _modules():
        if path.is_relative_to(PACKAGE / outside) or path == PACKAGE / outside:
            continue
        for module, names, line in _imports(path):
            imported = [module, *(f"{module}.{n}" for n in names)]
            if any(m == target or m.startswith(target + ".") for m in imported):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return found


def test_only_the_kube_package_and_its_commands_import_kubernetes_code():
    wrong = [
        line
        for target in ("fanflow.kube", "hera", "kubernetes", "argo_workflows")
        for line in _importers(target, outside="kube")
        if not line.startswith("fanflow/cli/kube.py")
    ]
    assert not wrong, "\n".join(wrong)


def test_executors_hold_local_and_ray_and_exporters_only_drawings():
    assert {p.stem for p in (PACKAGE / "exporters").glob("*.py")} == {"__init__", "graph"}
    executors = {p.stem for p in (PACKAGE / "executors").glob("*.py")}
    assert not {name for name in executors if "pod" in name or "kube" in name or "argo" in name}


def test_the_pod_runs_tasks_as_every_backend_does_not_through_the_local_or_ray_executor():
    wrong = []
    for path in sorted((PACKAGE / "kube").rglob("*.py")):
        for module, _, line in _imports(path):
            if module.startswith(
                ("fanflow.executors.local", "fanflow.executors.ray", "fanflow.engine.runner")
            ):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_web_ui_reads_runs_through_the_library_never_sql():
    """fanflow.ui knows the public API (history, background, results), not the run store."""
    wrong = []
    for path in sorted((PACKAGE / "ui").rglob("*.py")):
        for module, _, line in _imports(path):
            if module.split(".")[0] == "sqlalchemy" or module.startswith(("fanflow.stores.runs", "fanflow.stores.schema",
                                                                          "fanflow.stores.recording")):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)
    sources = " ".join(p.read_text() for p in (PACKAGE / "ui").rglob("*.py"))
    assert "project.store" not in sources and "._store" not in sources
