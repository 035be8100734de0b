"""The import graph reads top-down: `claims_realtime` (composition) -> `handlers` -> `realtime`
-> `models`, with no module importing another that imports it back (docs/development.md).

Read from the source with `ast`, counting every import: module level, inside functions, and
under `TYPE_CHECKING`, since a type-only circle still ties two modules together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "claims_realtime"
#: Each layer may import its own and the ones after it, never one before it.
LAYERS = ("composition", "handlers", "realtime", "models")


def _modules() -> dict[str, Path]:
    found = {f"{PACKAGE}.{p.stem}": p for p in (ROOT / PACKAGE).glob("*.py")}
    for layer in LAYERS[1:]:
        for path in (ROOT / layer).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join((PACKAGE, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else "composition"


def _imports(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """The package modules `module` imports (a `from x import y` of a submodule counts as y)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            submodules = [f"{source}.{alias.name}" for alias in node.names]
            targets = [t for t in submodules if t in known] or [source]
        else:
            continue
        yield from (t for t in targets if t in known and t != module)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: set(_imports(name, path, set(modules))) for name, path in modules.items()}


def test_the_graph_is_read_from_every_layer(graph: dict[str, set[str]]) -> None:
    assert {_layer(name) for name in graph} == set(LAYERS)
    assert "claims_realtime.realtime.hub" in graph["claims_realtime.handlers.app_state"]


def test_no_module_imports_a_layer_above_its_own(graph: dict[str, set[str]]) -> None:
    upward = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        for target in targets
        if LAYERS.index(_layer(target)) < LAYERS.index(_layer(name))
    )
    assert upward == []


def test_no_import_circle(graph: dict[str, set[str]]) -> None:
    circles: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_the_installed_package_does_not_import_tools(graph: dict[str, set[str]]) -> None:
    for path in _modules().values():
        tree = ast.parse(path.read_text())
        names = [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        ] + [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [n for n in names if n == "tools" or n.startswith("tools.")], path
