"""The package's shape (docs/architecture.md): imports point down the layers, no import
circle, package imports inside functions only on the start-up path, and the size limit."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "inductor_sm_override"
LAYERS = {"core": 0, "torch_plan": 1, "checks": 2, "policy": 2, "hooks": 3, "fleet": 3,
          "compile_scope": 4, "api": 5, "tools": 6}
ROOT_LAYER = 7  # __init__, __main__, testing: the face
START_UP = {"_hook"}  # imports nothing at its top; its function-local imports are allowed
MAX_LINES = 9363


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(p for p in parts if p != "__init__")
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def _imports(name: str, tree: ast.Module, is_package: bool) -> list[tuple[str, bool]]:
    """(imported package module, at module top?) for every relative import."""
    top = {id(node) for node in tree.body}
    base = name.split(".") if name else []
    if not is_package:
        base = base[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            where = base[: len(base) - node.level + 1]
            target = ".".join([*where, *([node.module] if node.module else [])])
            out.append((target, id(node) in top))
    return out


def _layer(module: str) -> int:
    head = module.split(".")[0] if module else ""
    return 0 if head in START_UP else LAYERS.get(head, ROOT_LAYER)


def test_imports_point_down_and_none_hide_in_functions():
    upward, local = [], []
    for name, tree in _modules().items():
        is_package = (PACKAGE / name.replace(".", "/") / "__init__.py").exists() or not name
        for target, at_top in _imports(name, tree, is_package):
            if target == "" or (name in START_UP and not at_top):
                continue  # the root package; the start-up path's deferred imports
            same_group = target.split(".")[0] == name.split(".")[0]
            if _layer(target) > _layer(name) or (
                    _layer(target) == _layer(name) and not same_group and _layer(name) < 4):
                upward.append(f"{name} -> {target}")
            if not at_top and name.split(".")[0] not in START_UP:
                local.append(f"{name} imports {target} inside a function")
    assert upward == [] and local == []


def test_no_import_circle():
    graph = {}
    for name, tree in _modules().items():
        is_package = (PACKAGE / name.replace(".", "/") / "__init__.py").exists() or not name
        graph[name] = {t for t, _ in _imports(name, tree, is_package) if t and t != name}
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert seen.get(nxt) != 1, " -> ".join([*path, node, nxt])
            if nxt not in seen:
                visit(nxt, [*path, node])
        seen[node] = 2

    for name in sorted(graph):
        if name not in seen:
            visit(name, [])


def test_the_package_does_not_grow():
    lines = sum(p.read_text().count("\n") for p in PACKAGE.rglob("*.py"))
    assert lines <= MAX_LINES, f"{lines} lines, the limit is {MAX_LINES}"
