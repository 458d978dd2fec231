"""The package's import graph: imports flow down the layers and no modules import each other.

Every `import` / `from ... import` of every module under `src/mhyolo` counts, wherever it stands
(a function-level import made to keep a command light is still a dependency), relative imports
resolved. `from P import n` depends on `P` and, where `P.n` is a module, on `P.n` too; an import
depends on the module it names, not on the packages above it. The layers are the table below
(`docs/architecture.md`, *Import graph*): a module may import its own layer and those beneath.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT_PACKAGE = "mhyolo"

# package (or top-level module) under `mhyolo` -> layer; a module imports only layers <= its own.
LAYERS = {
    "errors": 0, "config": 0, "paths": 0, "defaults": 0, "machine": 0, "version": 0, "installs": 0,
    "model": 1,
    "data": 2,
    "infer": 3,  # running a model: pre/post-processing, type sources, backends, exported-graph layout
    "eval": 4,
    "deploy": 5, "train": 5,
    "classify": 6,
    "runtime": 7, "bench": 7,  # a model file made runnable (format table, classifier, input rule)
    "pipeline": 8, "track": 8,  # track: ball trajectories over a model's per-frame detections
    "report": 9, "adapt": 9,
    "api": 10, ROOT_PACKAGE: 10,  # `mhyolo/__init__.py` hands out the API
    "commands": 11,
    "cli": 12,
}


def module_files() -> dict[str, Path]:
    """Dotted module name -> its file (a package is named by its `__init__.py`)."""
    files = {}
    for path in sorted((SRC / ROOT_PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that module `name` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return {target for target in found if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
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
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest import cycle through the component's first module, as a path back to it."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return paths[node] + [start]
            if target not in paths:
                paths[target] = paths[node] + [target]
                queue.append(target)
    return component


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1] if len(parts) > 1 else ROOT_PACKAGE)


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "mhyolo.infer.preprocess" in graph["mhyolo.infer.predictor"]  # an absolute import
    assert "mhyolo.report.html" in graph["mhyolo.report.page"]
    cycle = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(cycle) == [["a", "b", "c"]]
    assert one_cycle(cycle, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    package = tmp_path / "mhyolo" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from . import a\nfrom .b import thing\n")
    (package / "a.py").write_text("from . import b\nfrom .. import errors\nfrom ..pkg.b import thing\n")
    modules = {"mhyolo", "mhyolo.errors", "mhyolo.pkg", "mhyolo.pkg.a", "mhyolo.pkg.b"}
    assert imports_of("mhyolo.pkg", package / "__init__.py", modules) == {"mhyolo.pkg.a", "mhyolo.pkg.b"}
    assert imports_of("mhyolo.pkg.a", package / "a.py", modules) == {"mhyolo.pkg", "mhyolo.pkg.b", "mhyolo",
                                                                     "mhyolo.errors"}


def test_no_two_modules_import_each_other() -> None:
    graph = import_graph()
    components = strongly_connected(graph)
    message = "\n".join(f"{' -> '.join(one_cycle(graph, c))}   (all of: {', '.join(c)})" for c in components)
    assert not components, f"import cycles:\n{message}"


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Package (or top-level module) under `mhyolo` -> the packages its modules import."""
    def package(name: str) -> str:
        parts = name.split(".")
        return parts[1] if len(parts) > 1 else ROOT_PACKAGE

    packages: dict[str, set[str]] = {}
    for name, targets in graph.items():
        packages.setdefault(package(name), set()).update(package(t) for t in targets if package(t) != package(name))
    return packages


def test_no_two_packages_import_each_other() -> None:
    """A folder is a unit too: two packages whose modules import each other (even without a module cycle)
    are one tangle that can be neither read nor installed apart."""
    graph = package_graph(import_graph())
    components = strongly_connected(graph)
    message = "\n".join(f"{' -> '.join(one_cycle(graph, c))}" for c in components)
    assert not components, f"packages importing each other:\n{message}"


def test_every_package_has_a_layer() -> None:
    unknown = sorted({name for name in import_graph() if layer_of(name) is None})
    assert not unknown, f"modules of packages without a layer (add them to LAYERS): {', '.join(unknown)}"


def test_imports_flow_down_the_layers() -> None:
    upward = [f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
              for name, targets in sorted(import_graph().items()) for target in sorted(targets)
              if None not in (layer_of(name), layer_of(target)) and layer_of(target) > layer_of(name)]
    assert not upward, "imports running up a layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("package", sorted(p for p in LAYERS if p != ROOT_PACKAGE))
def test_the_layer_table_names_real_modules(package: str) -> None:
    assert (SRC / ROOT_PACKAGE / package).is_dir() or (SRC / ROOT_PACKAGE / f"{package}.py").is_file()


def test_no_command_imports_another_command() -> None:
    """A command is a `commands` module with a `register`; what two of them share (argument helpers)
    lives in a module without one (`commands.inference_args`, `commands.scale_args`)."""
    files = module_files()
    commands = {name for name, path in files.items() if name.startswith(f"{ROOT_PACKAGE}.commands.")
                and "\ndef register(" in path.read_text(encoding="utf-8")}
    assert {f"{ROOT_PACKAGE}.commands.predict", f"{ROOT_PACKAGE}.commands.val"} <= commands
    graph = import_graph()
    crossing = [f"{name} imports {target}" for name in sorted(commands) for target in sorted(graph[name] & commands)]
    assert not crossing, "commands importing commands:\n" + "\n".join(crossing)
