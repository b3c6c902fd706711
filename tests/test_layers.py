"""The package's import graph, read from the source (imports inside functions included): no
circles, frontends imported only by frontends, the loop importing nothing of the run or above."""

from __future__ import annotations

import ast
from pathlib import Path

import vqclip

ROOT = Path(vqclip.__file__).parent
FRONTENDS = {"vqclip.cli", "vqclip.notebook", "vqclip.ui", "vqclip.forms", "vqclip.webguard"}
LOOP = {
    "vqclip.loop", "vqclip.objective", "vqclip.cutouts", "vqclip.perceptors",
    "vqclip.generators", "vqclip.latents", "vqclip.losses", "vqclip.optimizers",
    "vqclip.prompts", "vqclip.embeddings", "vqclip.diffusion",
}  # fmt: skip
ABOVE_THE_LOOP = FRONTENDS | {
    "vqclip.pipeline", "vqclip.prepare", "vqclip.schedule", "vqclip.runstate", "vqclip.restyle",
    "vqclip.frames", "vqclip.video", "vqclip.cluster", "vqclip.sweep", "vqclip.upscale",
}  # fmt: skip


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Each vqclip module -> the vqclip modules it imports anywhere in its source. ``from
    vqclip import presets`` counts as importing ``vqclip.presets``, not the package."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                submodules = {f"{source}.{a.name}" for a in node.names} & modules.keys()
                found |= submodules
                if len(submodules) < len(node.names):
                    found.add(source)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while (other := stack.pop()) != node:
                component.append(other)
            if component:
                found.append(sorted([node, *component]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_reader_sees_a_circle_and_imports_inside_functions() -> None:
    """The check itself can fail: a planted circle through an import inside a function."""
    graph = import_graph()
    assert "vqclip.download" in graph["vqclip.zoo"]  # imported at the top
    assert "vqclip.restyle" in graph["vqclip.cluster"]  # or inside a function (a Ray task)
    planted = {**graph, "vqclip.download": graph["vqclip.download"] | {"vqclip.zoo"}}
    assert ["vqclip.download", "vqclip.zoo"] in circles(planted)


def test_no_import_circles() -> None:
    """Issue 47: zoo <-> download and cluster -> pipeline -> restyle -> cluster were circles."""
    assert circles(import_graph()) == []


def test_frontends_are_imported_only_by_frontends() -> None:
    graph = import_graph()
    wrong = {m: sorted(i & FRONTENDS) for m, i in graph.items() if i & FRONTENDS}
    assert {m: i for m, i in wrong.items() if m not in FRONTENDS | {"vqclip.__main__"}} == {}


def test_the_loop_imports_nothing_of_the_run_or_above() -> None:
    graph = import_graph()
    assert {m: sorted(graph[m] & ABOVE_THE_LOOP) for m in LOOP if graph[m] & ABOVE_THE_LOOP} == {}
