"""The package's import graph, read from the source (imports inside functions included): no
circles, and every folder importing only its own layer and those below it."""

from __future__ import annotations

import ast
from pathlib import Path

import vqclip

ROOT = Path(vqclip.__file__).parent
# The layers, lowest first: a module imports only its own folder and the folders before it.
LAYERS = ("core", "models", "loop", "run", "scale", "frontends")
PLUGINS = ("shapes", "bench")  # above everything; nothing in the layers imports them


def layer(module: str) -> int:
    folder = module.split(".")[1] if module.count(".") else ""
    if folder in LAYERS:
        return LAYERS.index(folder)
    return len(LAYERS)  # the package itself (its lazy re-exports), __main__ and the plugins


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Each vqclip module -> the vqclip modules it imports anywhere in its source. ``from
    vqclip import presets`` counts as importing ``vqclip.core.presets``, not the package."""
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
    assert "vqclip.models.download" in graph["vqclip.models.registry"]  # imported at the top
    assert (
        "vqclip.run.restyle" in graph["vqclip.scale.cluster"]
    )  # or inside a function (a Ray task)
    planted = {**graph, "vqclip.models.download": graph["vqclip.models.download"] | {"vqclip.models.registry"}}  # fmt: skip
    assert ["vqclip.models.download", "vqclip.models.registry"] in circles(planted)
    assert broken_layers({"vqclip.loop.optimise": {"vqclip.scale.distributed"}}) == {
        "vqclip.loop.optimise": ["vqclip.scale.distributed"]
    }


def broken_layers(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    return {
        module: sorted(i for i in imported if layer(i) > layer(module))
        for module, imported in graph.items()
        if any(layer(i) > layer(module) for i in imported)
    }


def test_no_import_circles() -> None:
    """Issue 47: zoo <-> download and cluster -> pipeline -> restyle -> cluster were circles."""
    assert circles(import_graph()) == []


def test_every_folder_imports_only_its_layer_and_those_below() -> None:
    """core < models < loop < run < scale < frontends: the loop imports nothing of a run, a run
    is handed its scale-out, and only frontends import frontends."""
    assert broken_layers(import_graph()) == {}


def test_every_module_lives_in_a_layer_or_a_plugin() -> None:
    top = {p.stem for p in ROOT.glob("*.py")} - {"__init__", "__main__"}
    folders = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert (top, folders) == (set(), set(LAYERS + PLUGINS))
