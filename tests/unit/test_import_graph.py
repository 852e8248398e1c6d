"""The library's module-level imports form no cycle (issue 19): each stage imports only stages below it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "deploybench"


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def module_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The library modules `path` imports when it is imported (not inside functions or TYPE_CHECKING)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            continue
        for item in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(item, ast.ImportFrom):
                base = item.module or ""
                if item.level:
                    parts = package.split(".")[: len(package.split(".")) - item.level + 1]
                    base = ".".join(parts + ([item.module] if item.module else []))
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in item.names}
            elif isinstance(item, ast.Import):
                found |= {a.name for a in item.names}
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(LIBRARY.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): module_level_imports(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state, stack, found = {}, [], []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for dependency in sorted(graph[module]):
            if state.get(dependency) == "open":
                found.append(stack[stack.index(dependency) :] + [dependency])
            elif dependency not in state:
                visit(dependency)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_the_library_imports_form_no_cycle():
    graph = import_graph()
    assert len(graph) > 50 and any(graph.values())  # the walk found the library and its imports
    assert cycles(graph) == []


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
