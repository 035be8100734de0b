"""The modules of `realtime/`: no two import each other, directly or round a longer circle
(imports under `TYPE_CHECKING` and inside functions count too); none imports the handlers or
the composition modules; none grows past the size where a module wants splitting."""

from __future__ import annotations

import ast
from pathlib import Path

REALTIME = Path(__file__).resolve().parents[2] / "realtime"
PACKAGE = "claims_realtime.realtime"
#: Past this a module wants splitting (STYLE.md: split past ~400 lines).
MAX_LINES = 400


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, fully qualified (`from x import y` counts x.y when y is a
    module of realtime/, else x)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            source = node.module if not node.level else f"{PACKAGE}.{node.module}"
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


def realtime_graph() -> dict[str, set[str]]:
    """realtime/'s modules (by stem) -> the realtime/ modules each imports."""
    stems = {path.stem for path in REALTIME.glob("*.py")} - {"__init__"}
    return {
        stem: {
            name.removeprefix(f"{PACKAGE}.")
            for name in imports_of(REALTIME / f"{stem}.py")
            if name.removeprefix(f"{PACKAGE}.") in stems and name.startswith(PACKAGE)
        }
        - {stem}
        for stem in sorted(stems)
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []

    def visit(path: list[str]) -> None:
        for target in sorted(graph[path[-1]]):
            if target in path:
                found.append([*path[path.index(target) :], target])
            else:
                visit([*path, target])

    for start in sorted(graph):
        visit([start])
    return found


def test_no_module_of_realtime_imports_one_that_imports_it_back() -> None:
    graph = realtime_graph()
    assert graph["fanout"] == {"metrics", "sockets"}
    assert circles(graph) == []


def test_realtime_imports_neither_handlers_nor_composition_modules() -> None:
    allowed = (f"{PACKAGE}.", "claims_realtime.models")
    for path in sorted(REALTIME.glob("*.py")):
        ours = {n for n in imports_of(path) if n.split(".")[0] == "claims_realtime"}
        above = sorted(n for n in ours if n != PACKAGE and not n.startswith(allowed))
        assert above == [], path.name


def test_every_module_of_realtime_is_at_most_400_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in REALTIME.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
