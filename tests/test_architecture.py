"""The layout is the architecture: dependencies point one way, and no two packages import each other.

viewer -> vigilance -> inference -> orthanc -> openaim (../shared/DESIGN.md, Layout). Only
openaim/schema.py and openaim/cli.py, which gather every table and every command, may import from every
package; they may import from everywhere, but nothing may import them back. Every import counts, the ones
inside functions too: a deferred import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("openaim", "orthanc", "inference", "vigilance", "viewer")  # each may import those before it
GATHERERS = {"openaim.schema", "openaim.cli"}


def _modules() -> Iterator[tuple[str, Path]]:
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path: Path) -> set[str]:
    """Every project module this file imports (``from a import b`` counts as a.b when b is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in LAYERS and _is_module(name)}


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _unit(module: str) -> str:
    """What a cycle is counted between: a subpackage as a whole, or a module at the top of a layer."""
    parts = module.split(".")
    if len(parts) > 2 or (ROOT.joinpath(*parts) / "__init__.py").is_file():
        return ".".join(parts[:2])
    return module


GRAPH = {module: _imports(path) for module, path in _modules()}


def test_the_scan_sees_the_project() -> None:
    assert "viewer.reading.worklist" in GRAPH
    assert "viewer.access.deps" in GRAPH["viewer.reading.worklist"]
    assert "inference.catalog" in GRAPH["viewer.catalog.pages"]


@pytest.mark.parametrize("module", sorted(set(GRAPH) - GATHERERS))
def test_dependencies_point_one_way(module: str) -> None:
    rank = LAYERS.index(module.split(".")[0])
    upward = sorted(name for name in GRAPH[module] if LAYERS.index(name.split(".")[0]) > rank)
    assert not upward, f"{module} imports from a layer above it: {upward}"


def _unit_graph() -> dict[str, set[str]]:
    units: dict[str, set[str]] = {}
    for module, imported in GRAPH.items():
        here = _unit(module)
        units.setdefault(here, set()).update(_unit(name) for name in imported if _unit(name) != here)
    return units


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in the graph, as the path that closes it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [*path, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_two_packages_import_each_other() -> None:
    cycle = _cycle(_unit_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
