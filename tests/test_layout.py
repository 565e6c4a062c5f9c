"""The project's shape: packages in one order, each importing only those below it; no import circle between
modules (counting the imports inside functions, which hide a circle rather than remove it); and no module too
long to read in one sitting."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "denoisers", "schedules")
MAX_LINES = 450
LAYERS = (
    "bench",  # the shared helpers at the top of bench/: registry, io, images, environment, distributed
    "schedules",
    "bench.datasets",
    "bench.metrics",
    "bench.process",
    "denoisers",
    "bench.config",
    "bench.training",
    "bench.evaluation",
    "bench.runs",
    "bench.reports",
    "bench.cluster",
    "bench.studies",
    "bench.cli",
)
"""The packages from the bottom up: a module may import its own package and those listed before it, never
one after it. docs/pieces.md describes each."""


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its body (``from . import x`` counts as
    importing the package's module ``x``)."""
    found = modules()
    graph: dict[str, set[str]] = {name: set() for name in found}
    for name, path in found.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in found and t != name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> int:
    """The index in LAYERS of the package ``module`` belongs to (the longest that contains it)."""
    found = [i for i, name in enumerate(LAYERS) if module == name or module.startswith(name + ".")]
    return max(found, key=lambda i: len(LAYERS[i]))


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a package listed after the importer's own, as ``importer -> imported``."""
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if layer(target) > layer(module)
    )


def test_every_module_belongs_to_a_named_package():
    """A new package is given its place in LAYERS, or it would sit with the helpers unseen."""
    helpers = {name for name in modules() if layer(name) == 0}
    assert all(name.count(".") <= 1 for name in helpers), sorted(helpers)


def test_no_package_imports_one_above_it():
    assert upward_imports(import_graph()) == []


def test_the_order_check_finds_an_upward_import():
    graph = {"bench.training.trainer": {"bench.runs.run"}, "bench.runs.run": {"bench.training.trainer"}}
    assert upward_imports(graph) == ["bench.training.trainer -> bench.runs.run"]


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    assert circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_no_module_is_over_450_lines():
    lengths = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}
