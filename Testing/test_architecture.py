"""The shape of the project: no import circles anywhere, and only ``LDCTDenoiseLib.slicer`` (and the
module file) touch Slicer, Qt or VTK. Read from the sources, imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"LDCTDenoiseLib": ROOT / "LDCTDenoise" / "LDCTDenoiseLib", "training": ROOT / "training",
            "evaluation": ROOT / "evaluation"}
HOST_MODULES = {"slicer", "qt", "vtk", "ctk", "PyTorchUtils"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (a package's ``from . import x`` counts as x)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {t for t in targets if t in known and t != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_the_import_graph_is_read_from_the_sources():
    graph = _graph()
    assert "LDCTDenoiseLib.engine.options" in graph["LDCTDenoiseLib.cli"]
    assert "LDCTDenoiseLib.engine.openvino_runtime" in graph["LDCTDenoiseLib.engine.inference"]  # inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_of_the_project_imports_itself_back_through_others():
    assert _cycles(_graph()) == []


def test_only_the_slicer_package_imports_slicer_qt_or_vtk():
    offenders = []
    for name, path in _modules().items():
        if name.startswith("LDCTDenoiseLib.slicer"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            roots = ({a.name.split(".")[0] for a in node.names} if isinstance(node, ast.Import) else
                     {node.module.split(".")[0]} if isinstance(node, ast.ImportFrom) and node.level == 0 else set())
            offenders += [f"{name}: {root}" for root in roots & HOST_MODULES]
    assert offenders == []


def test_the_engine_options_import_without_torch_or_numpy():
    import subprocess
    import sys

    code = ("import sys; import LDCTDenoiseLib.engine.options, LDCTDenoiseLib.slicer.settings; "
            "print(sorted({'torch', 'numpy'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
