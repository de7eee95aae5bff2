"""labctl's modules import in one direction: no module reaches itself again through its imports.

Imports inside functions count too: a lazy import is still a dependency, only a later one. A submodule that
imports from its own package (``labctl.targets.azure.plan`` from ``labctl.targets.azure``) is the package's
public face, not a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import labctl

ROOT = Path(labctl.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = ("labctl", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        named: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                named.add(node.module)
                named.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                named.update(alias.name for alias in node.names)
        graph[name] = {m for m in named if m in files and m != name and not name.startswith(m + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that returns to its start, or None."""
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for dep in sorted(graph[node]):
            cycle = walk(dep, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = walk(start, [])
        if cycle:
            return cycle
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_check_sees_a_cycle_through_a_lazy_import() -> None:
    graph = import_graph()
    assert "labctl.workflows.runlab_options" in graph["labctl.workflows.runlab"]
    graph["labctl.workflows.runlab_options"] = {*graph["labctl.workflows.runlab_options"], "labctl.workflows.runlab"}
    assert find_cycle(graph) is not None
