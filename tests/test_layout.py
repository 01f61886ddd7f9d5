"""The package's shape: layers import downward only, no import cycle, small modules.

Every import counts, typing-only and function-local ones included: a cycle
hidden behind ``TYPE_CHECKING`` still ties two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import flask_openfactory

ROOT = Path(flask_openfactory.__file__).parent
PACKAGE = "flask_openfactory"
MAX_LINES = 400
# Each layer may import its own modules and those of lower rank.
RANKS = {"wire": 0, "transports": 1, "ksqldb": 1, "runtime": 2, "glue": 3}
SIBLINGS = {("transports", "ksqldb")}  # the Kafka transport finds its topic through ksqlDB


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module in MODULES:
                targets.add(module)
            targets.update(f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES)
    targets.discard(name)
    return targets


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    first = module.split(".")[1] if "." in module else ""
    return first if first in RANKS else "glue"


def test_no_layer_imports_one_above_it() -> None:
    upward = [f"{a} ({_layer(a)}) imports {b} ({_layer(b)})"
              for a, targets in GRAPH.items() for b in targets
              if RANKS[_layer(b)] > RANKS[_layer(a)]
              or (RANKS[_layer(b)] == RANKS[_layer(a)] and _layer(a) != _layer(b)
                  and (_layer(a), _layer(b)) not in SIBLINGS)]
    assert upward == []


def test_no_import_cycle() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
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
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert cycles == []


def test_no_module_over_400_lines() -> None:
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_check_sees_the_whole_package() -> None:
    assert len(MODULES) > 100 and {"wire", "transports", "ksqldb", "runtime", "glue"} == {
        _layer(m) for m in MODULES}
    assert f"{PACKAGE}.runtime.core" in GRAPH[f"{PACKAGE}.runtime"]  # relative imports resolved
