"""The package's import graph: layers (a module imports only from its layer or below), no cycles between
packages, and every module importable in any order in a fresh interpreter.

Imports under ``if TYPE_CHECKING:`` do not count (they never run); imports inside functions do (they run
when the function does, so they still tie the layers together)."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "assay"

#: Bottom to top. A module's layer is the one of its longest matching prefix.
LAYERS: dict[str, int] = {
    "assay.errors": 1, "assay._version": 1, "assay._paths": 1, "assay._hashing": 1, "assay._validation": 1,
    "assay.progress": 1,
    "assay.stats": 2, "assay.data": 2, "assay.corruptions": 2, "assay.attacks": 2, "assay.evidence": 2,
    "assay.environment": 2, "assay.reference": 2,
    "assay.models": 3, "assay.report": 3,
    "assay.engine": 4, "assay.profiling": 4,
    "assay.checks": 5,
    "assay.evaluation": 6,
    "assay.compare": 7, "assay.compress": 7, "assay.govern": 7, "assay.audit": 7, "assay.security": 7,
    "assay.estimate": 7,
    "assay.registry": 8,
    "assay.serve": 9, "assay.monitor": 9,
    "assay.api": 10, "assay.demo": 10, "assay.integrations": 10, "assay.cli": 11, "assay._entry": 12, "assay": 12,
}


def _module_name(path: Path) -> str:
    parts = ["assay", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(path: Path, module: str) -> set[str]:
    """Every ``assay.*`` module ``path`` imports outside ``if TYPE_CHECKING:`` blocks."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("assay"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    target = child.module or ""
                if target.startswith("assay"):
                    submodules = [a.name for a in child.names
                                  if (SRC.parent / (f"{target}.{a.name}".replace(".", "/") + ".py")).exists()
                                  or (SRC.parent / f"{target}.{a.name}".replace(".", "/")).is_dir()]
                    if target != "assay" or len(submodules) < len(child.names):
                        found.add(target)  # `from assay import attacks` runs only the (lazy) package init
                    # `from assay.x import y` may import the submodule assay.x.y
                    found.update(f"{target}.{a.name}" for a in child.names
                                 if (SRC.parent / (f"{target}.{a.name}".replace(".", "/") + ".py")).exists()
                                 or (SRC.parent / f"{target}.{a.name}".replace(".", "/")).is_dir())
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _runtime_imports(p, _module_name(p)) for p in sorted(SRC.rglob("*.py"))}


def test_every_module_imports_only_its_layer_or_below():
    graph = _graph()
    violations = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
                  for m, targets in graph.items() for t in sorted(targets) if _layer(t) > _layer(m)]
    assert not violations, "\n".join(violations)


def test_checks_compare_and_compress_stay_off_the_facade():
    """The issue's rules by name: checks/ imports neither compress/ nor compare/ nor api; compare/ and
    compress/ never import api."""
    graph = _graph()
    bad = []
    for module, targets in graph.items():
        for target in targets:
            if (module.startswith("assay.checks")
                    and target.startswith(("assay.compress", "assay.compare", "assay.api"))):
                bad.append(f"{module} -> {target}")
            if module.startswith(("assay.compare", "assay.compress")) and target == "assay.api":
                bad.append(f"{module} -> {target}")
    assert not bad, bad


def test_no_cycles_between_packages():
    """Package level (assay.data, assay.evidence, ...): a cycle would make the layers meaningless even where
    two packages share a layer."""
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in _graph().items():
        for target in targets:
            if _package(target) != _package(module):
                edges[_package(module)].add(_package(target))
    seen: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if seen.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in seen and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        seen[node] = 2
        return None

    for node in sorted(edges):
        if node not in seen and (cycle := dfs(node)):
            pytest.fail("package import cycle: " + " -> ".join(cycle))


def test_the_layer_test_sees_violations():
    """The walker itself: a function-level import counts, a TYPE_CHECKING one does not."""
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from assay.api import evaluate\n"
              "def f():\n    from assay.compress.run import compress\n")
    path = SRC / "stats" / "_probe_for_layer_test.py"
    path.write_text(source)
    try:
        imports = _runtime_imports(path, "assay.stats._probe_for_layer_test")
    finally:
        path.unlink()
    assert "assay.compress.run" in imports and "assay.api" not in imports


@pytest.mark.parametrize("seed", range(3))
def test_every_module_imports_in_any_order_in_a_fresh_interpreter(seed):
    modules = sorted(_graph())
    random.Random(seed).shuffle(modules)
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code, *modules],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
