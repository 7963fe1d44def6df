"""The packages' import graph (harness, backends, calib): no cycle, and harness's wings import downward only.

Every ``import`` statement counts as an edge, at module level, inside a function (a function-level import
that dodges a circle is still a circle) and under ``if TYPE_CHECKING:`` (a type-only import is still a
dependency of the design, even if it never runs).

The wings of ``harness/`` (each ``__init__`` says what lives there): ``measure`` imports none of the
others, ``store`` may import ``measure``, ``sweep`` and ``analysis`` may import ``store`` and ``measure``."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "backends", "calib")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool, modules: frozenset[str] = frozenset()) -> set[str]:
    """What ``module`` imports; ``from pkg import sub`` names ``pkg.sub`` alone when it is one of
    ``modules`` (importing a submodule needs its package initialised, not its package's contents)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            visit_stmt(child)

    def visit_stmt(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            subs = {f"{target}.{alias.name}" for alias in node.names}
            found.update(subs & modules)
            if not subs <= modules:  # some imported name is the package's own content
                found.add(target)
        visit(node)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = _imports(ast.parse(path.read_text()), name, path.name == "__init__.py", frozenset(modules))
        edges = set()
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        for target in targets:
            # Importing a.b.c runs a, a.b and a.b.c: each one that is ours is an edge, except the
            # importer's own enclosing packages (always initialised before it) unless named themselves.
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in modules and prefix != name and (prefix not in ancestors or prefix == target):
                    edges.add(prefix)
        graph[name] = edges
    return graph


def test_the_cycle_finder_finds_a_cycle_and_counts_type_checking_imports() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    assert circles({"a": {"b"}, "b": set()}) == []
    code = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import harness.x\n"
            "def f():\n    from harness import y\n")
    assert _imports(ast.parse(code), "harness.m", False) >= {"harness"}
    assert "harness.y" in _imports(ast.parse(code), "harness.m", False, frozenset({"harness.y"}))
    assert "harness.x" in _imports(ast.parse(code), "harness.m", False)


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Every set of modules that import each other, directly or not (Tarjan's strongly connected
    components with more than one module, or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


#: Circles tolerated for now (none: every module graph of harness/, backends/ and calib/ is acyclic).
KNOWN_CIRCLES: set[frozenset[str]] = set()


def test_harness_backends_and_calib_import_no_circle() -> None:
    graph = import_graph()
    assert "harness.sweep.driver" in graph and "backends.base" in graph
    assert {"harness.sweep.plan", "harness.sweep.unit"} <= graph["harness.sweep.driver"]  # function-level imports count too
    found = set(circles(graph)) - KNOWN_CIRCLES
    assert not found, "import circles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


#: What each wing of harness/ may import of the other wings.
WINGS: dict[str, frozenset[str]] = {
    "measure": frozenset(),
    "store": frozenset({"measure"}),
    "sweep": frozenset({"store", "measure"}),
    "analysis": frozenset({"store", "measure"}),
}


def wing_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "harness" and parts[1] in WINGS else None


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every edge from one wing into a wing it may not import."""
    found = []
    for module, targets in sorted(graph.items()):
        wing = wing_of(module)
        for target in sorted(targets):
            other = wing_of(target)
            if wing and other and other != wing and other not in WINGS[wing]:
                found.append((module, target))
    return found


def test_the_wing_rule_finds_an_upward_import() -> None:
    graph = {"harness.measure.timing": {"harness.store.outcome"}, "harness.store.outcome": {"harness.measure.stats"},
             "harness.sweep.unit": {"harness.analysis.report"}, "harness.analysis.report": {"harness.store.results"}}
    assert upward_imports(graph) == [("harness.measure.timing", "harness.store.outcome"),
                                     ("harness.sweep.unit", "harness.analysis.report")]


def test_the_wings_of_harness_import_downward_only() -> None:
    graph = import_graph()
    assert {wing_of(m) for m in graph} >= set(WINGS), "every wing exists"
    found = upward_imports(graph)
    assert not found, "upward imports between wings: " + "; ".join(f"{a} -> {b}" for a, b in found)
