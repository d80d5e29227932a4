"""mv4d_core's packages only look down: every import (module level or inside a function) is checked
against the layer order, and the package graph has no cycle."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import mv4d_core

ROOT = Path(mv4d_core.__file__).parent

#: Bottom to top; packages on one line are one layer (they may import each other, without a cycle).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("utils", "geometry"),
    ("msgs",),
    ("data",),
    ("models", "render"),
    ("losses",),
    ("engines",),
    ("training", "pipeline", "eval", "export"),
    ("demo",),
    ("cli",),
)
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def _imported_modules(path: Path) -> list[tuple[str, int]]:
    """``(absolute module, line)`` of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    here = ["mv4d_core", *path.relative_to(ROOT).with_suffix("").parts]
    if here[-1] == "__init__":
        here = here[:-1]
    else:
        here = here[:-1]                     # the module's package
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                out.append((".".join(base + ([node.module] if node.module else [])), node.lineno))
            elif node.module:
                out.append((node.module, node.lineno))
    return out


def package_edges() -> dict[str, set[tuple[str, str]]]:
    """package -> {(imported package, "file:line")} over every file of mv4d_core."""
    edges: dict[str, set] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        src = _package_of(path)
        for module, line in _imported_modules(path):
            parts = module.split(".")
            if parts[0] != "mv4d_core" or len(parts) < 2:
                continue
            dst = parts[1]
            if dst != src:
                edges[src].add((dst, f"{path.relative_to(ROOT.parent)}:{line}"))
    return edges


def test_every_package_has_a_layer():
    packages = {_package_of(p) for p in ROOT.rglob("*.py")} - {"__init__"}
    assert packages <= set(RANK), f"packages without a layer: {sorted(packages - set(RANK))}"


def test_no_package_imports_a_higher_layer():
    upward = [f"{where}: {src} ({RANK[src]}) imports {dst} ({RANK[dst]})"
              for src, targets in package_edges().items() for dst, where in targets
              if dst in RANK and RANK[dst] > RANK[src]]
    assert not upward, "\n".join(sorted(upward))


def test_the_package_graph_has_no_cycle():
    graph = {src: {dst for dst, _ in targets} for src, targets in package_edges().items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_checker_sees_imports_inside_functions():
    """The walker reads imports anywhere in a file, so a lazy import cannot hide an upward edge."""
    sample = ROOT / "pipeline" / "infer_command.py"
    modules = {m for m, _ in _imported_modules(sample)}
    assert "mv4d_core.engines" in modules      # imported inside run()
