"""The import rule: every import in src/pdiff (at module level or inside a function) goes down the declared layers
or stays within one, and no modules import each other in a circle. Read from the source with `ast`, so an import
hidden in a function counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "pdiff"

# Lowest first. A module may import modules of its own layer or of the layers below it, never above.
LAYERS = {
    "leaves": ("errors", "layout", "tasks", "provenance"),
    "infrastructure": ("store", "runlock", "folders", "distributed", "render", "params", "stats", "verdicts", "words",
                       "memorization", "similarity", "figures", "inference", "hub", "pretrained", "checkpoints",
                       "adapters", "checkpoint_files"),
    "networks": ("alignment", "autoencoder", "conv_blocks", "denoisers", "diffusion", "fitting", "families", "priors",
                 "priors.base", "priors.flat", "priors.tokens", "priors.factorised", "priors.flow", "tasks.models",
                 "tasks.datasets", "tasks.imagefolder", "tasks.imported", "baselines"),
    "config": ("rules", "config", "presets", "hashing"),
    "stages": ("task", "generator", "collect", "train", "generate", "evaluate", "report"),
    "runner": ("pipeline", "ablation", "run_folder", "sample", "share"),
    "cli": ("terminal", "cli", "__main__", "__init__"),
}
LAYER_OF = {f"{PACKAGE}.{name}": rank for rank, names in enumerate(LAYERS.values()) for name in names}
LAYER_NAMES = list(LAYERS)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]) if len(parts) > 2 else f"{PACKAGE}.__init__"
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((SRC / PACKAGE).rglob("*.py"))}


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The pdiff modules `path` imports anywhere in its body, with the packages above them (importing
    pdiff.tasks.datasets runs pdiff/tasks/__init__.py first); the package root `pdiff` itself is left out.

    Imports under `if TYPE_CHECKING:` are left out: they never run, and only name a class in annotations
    (the priors name the config class that reads their registry)."""
    this = module_name(path)
    package = this.rsplit(".", 1)[0] if not path.name == "__init__.py" else this.removesuffix(".__init__")
    tree = ast.parse(path.read_text(), str(path))
    type_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                 for statement in node.body for inner in ast.walk(statement)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            names = [source, *(f"{source}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for i in range(2, len(parts) + 1):
                if ".".join(parts[:i]) in modules:
                    found.add(".".join(parts[:i]))
    found.discard(this)
    return {name for name in found if not this.startswith(f"{name}.")}  # its own package is initialising already


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(path, set(modules)) for name, path in modules.items()}


def test_every_module_has_a_layer(graph) -> None:
    assert sorted(set(graph) - set(LAYER_OF)) == [], "declare the new module's layer in LAYERS"
    assert sorted(set(LAYER_OF) - set(graph)) == [], "a declared module no longer exists"


def test_no_import_goes_up_a_layer(graph) -> None:
    uphill = [f"{a} ({LAYER_NAMES[LAYER_OF[a]]}) imports {b} ({LAYER_NAMES[LAYER_OF[b]]})"
              for a, targets in sorted(graph.items()) for b in sorted(targets) if LAYER_OF[b] > LAYER_OF[a]]
    assert uphill == []


def test_no_import_circle(graph) -> None:
    state: dict[str, str] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                circles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_the_reader_sees_function_level_imports(tmp_path) -> None:
    """The check itself: an import inside a function is found, with the package above the module."""
    (tmp_path / PACKAGE / "tasks").mkdir(parents=True)
    path = tmp_path / PACKAGE / "low.py"
    path.write_text("def f():\n    from .tasks.models import build_model\n    from . import high\n")
    global SRC
    saved, SRC = SRC, tmp_path
    try:
        found = imported_modules(path, {"pdiff.low", "pdiff.high", "pdiff.tasks", "pdiff.tasks.models"})
    finally:
        SRC = saved
    assert found == {"pdiff.high", "pdiff.tasks", "pdiff.tasks.models"}
