"""No import cycles among treegym's modules (DESIGN: "dependencies point one way").

The graph is built from the source with ``ast``, not by importing: every ``import`` counts,
wherever it is (module level, inside a function, under ``if TYPE_CHECKING``), because a
function-level or type-only import hides a cycle without removing it. An edge goes to the
module an import names (``from .x import y`` -> ``.x``; ``from . import x`` -> ``.x`` when ``x``
is a module); the implicit import of a parent package is not an edge (every submodule would
otherwise form a cycle with an ``__init__`` that re-exports it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Source folder of each package (pyproject's package-dir).
PACKAGES = {
    "treegym": ROOT / "treegym",
    "treegym.envs": ROOT / "envs",
    "treegym.harness": ROOT / "harness",
    "treegym.policies": ROOT / "policies",
    "treegym.data": ROOT / "data",
    "treegym.integrations": ROOT / "treegym" / "integrations",
}


def module_files() -> dict[str, Path]:
    """Module name -> source file, for every module of every package."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.glob("*.py")):
            out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return out


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """treegym modules that ``name``'s source imports anywhere in the file."""
    is_package = path.stem == "__init__"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(name, is_package, node.module, node.level)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    return (out & known) - {name}


def _absolute(name: str, is_package: bool, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    parts = name.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join(anchor + ([module] if module else []))


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``) in ``graph``, or ``None`` (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def within(graph: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    """The subgraph of the modules whose source is in ``package``'s own folder."""
    files = module_files()
    inside = {m for m, path in files.items() if path.parent == PACKAGES[package]}
    return {m: graph[m] & inside for m in inside}


def test_the_graph_sees_relative_function_level_and_package_imports():
    graph = import_graph()
    assert "treegym.envs.core" in graph["treegym.envs.toy"]  # from .core import TextEnv
    assert "treegym.envs.registry" in graph["treegym.envs.checker"]  # inside check_env
    assert "treegym.envs" in graph["treegym"]  # from treegym.envs import ...
    assert "treegym.envs.checker" in graph["treegym.envs"]  # __init__: from .checker import
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"b"}}) is None


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle_within_package(package):
    assert find_cycle(within(import_graph(), package)) is None


def test_no_import_cycle_across_treegym():
    assert find_cycle(import_graph()) is None
