"""The import structure of calohls (docs/architecture.md): no cycle between modules or between subpackages, with
every import counted (those inside functions too), and the computing layers never import the layers that write,
draw or talk to the user."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Subpackages that compute; they return typed results and never import the layers below in the list.
COMPUTING = ("physics", "scan", "model", "quant", "firmware", "data", "sim")
#: Layers that draw, render, orchestrate or talk to the user.
PRESENTING = ("plots", "report", "cli", "stages", "pipeline")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "calohls").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The calohls module ``name`` is, or the innermost one that holds it (``pkg.mod.func`` -> ``pkg.mod``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[tuple[str, int]]:
    """(imported calohls module, line) of every import statement in ``module``, at any depth."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target) if target.split(".")[0] == "calohls" else None
            if resolved and resolved != module:
                found.add((resolved, node.lineno))
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def _room(module: str) -> str:
    """The subpackage (or top-level module) that ``module`` belongs to: ``calohls.scan.ptq`` -> ``scan``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "calohls"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _explain(component: list[str], edges: dict[str, set[tuple[str, str, int]]]) -> str:
    members = set(component)
    lines = [f"  {src} -> {dst} ({where}:{line})" for src in component for dst, where, line in sorted(edges[src])
             if dst in members]  # fmt: skip
    return "cycle between " + ", ".join(component) + ":\n" + "\n".join(lines)


def test_the_graph_sees_lazy_imports():
    """The parser counts imports inside functions (the study's tasks import their stages lazily)."""
    assert any(m == "calohls.model.qat" for m, _ in GRAPH["calohls.stages.study_tasks"])


def test_no_import_cycle_between_modules():
    edges = {m: {(t, str(MODULES[m].relative_to(SRC)), line) for t, line in ts} for m, ts in GRAPH.items()}
    cycles = _cycles({m: {t for t, _ in ts} for m, ts in GRAPH.items()})
    assert not cycles, "\n".join(_explain(c, edges) for c in cycles)


def test_no_import_cycle_between_subpackages():
    edges: dict[str, set[tuple[str, str, int]]] = {}
    for module, targets in GRAPH.items():
        edges.setdefault(_room(module), set())
        for target, line in targets:
            if _room(target) != _room(module):
                edges[_room(module)].add((_room(target), str(MODULES[module].relative_to(SRC)), line))
    cycles = _cycles({room: {t for t, _, _ in ts} for room, ts in edges.items()})
    assert not cycles, "\n".join(_explain(c, edges) for c in cycles)


@pytest.mark.parametrize("room", COMPUTING)
def test_computing_layers_do_not_import_drawing_or_the_command_line(room):
    bad = [
        f"{MODULES[m].relative_to(SRC)}:{line} imports {target}"
        for m, targets in GRAPH.items()
        if _room(m) == room
        for target, line in sorted(targets)
        if _room(target) in PRESENTING
    ]
    assert not bad, "\n".join(bad)


def test_plots_and_report_do_not_import_the_stages_or_the_command_line():
    bad = [
        f"{MODULES[m].relative_to(SRC)}:{line} imports {target}"
        for m, targets in GRAPH.items()
        if _room(m) in ("plots", "report")
        for target, line in sorted(targets)
        if _room(target) in ("cli", "stages", "pipeline")
    ]
    assert not bad, "\n".join(bad)
