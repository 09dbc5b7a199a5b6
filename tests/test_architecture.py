"""The shape the README describes: stages know nothing of the wiring, and no module imports itself in a circle."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("stages", "pipeline", "crispml")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every project module `path` imports, at module level or inside a function, type-checking blocks included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *([base] if base else [])])
            # `from pipeline import backends` imports the submodule; `from pipeline.errors import X` the module.
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, set(modules)) for name, path in modules.items()}


def test_no_stage_imports_the_wiring():
    offenders = {m: sorted(i for i in deps if i.split(".")[0] != "stages") for m, deps in _graph().items() if m.startswith("stages")}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_there_is_no_import_circle():
    graphlib.TopologicalSorter(_graph()).prepare()  # raises CycleError naming the circle


def test_the_graph_is_read_at_all():
    graph = _graph()
    assert "stages.modeling" in graph["pipeline.runner"] and "stages.fitting" in graph["stages.modeling"]
    assert "pipeline.backends.base" in graph["pipeline.backends.local_pool"]


def _imports_mlflow(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if any(n == "mlflow" or n.startswith("mlflow.") for n in names):
            return True
    return False


def test_every_mlflow_call_is_in_the_tracking_package():
    callers = sorted(name for name, path in _modules().items() if _imports_mlflow(path))
    assert callers and all(name.startswith("pipeline.tracking.") for name in callers), callers
