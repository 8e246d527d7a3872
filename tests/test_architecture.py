"""The layout ARCHITECTURE.md describes, checked on the source: no import circle among the package's modules, each
stage folder importing only the stages below it, and imports inside functions only where they keep torch out of
a path that must start without it."""
from __future__ import annotations

import ast
from pathlib import Path

import imgclf

PACKAGE = Path(imgclf.__file__).parent
# What each part may import (besides itself and the leaves every part may use: errors, files), as in
# ARCHITECTURE.md; the shared leaves are modules at the top, the stages are folders.
ALLOWED = {
    "errors": set(),
    "task": set(),
    "config": set(),
    "files": set(),
    "downloads": set(),
    "resources": set(),
    "run": {"config"},
    "device": {"config"},
    "distributed": set(),
    "models": set(),
    "data": {"config", "distributed", "task"},
    "metrics": {"config", "distributed", "task", "plots"},  # config: the diagnosis advises on the run's options
    "plots": {"metrics.diagnose"},  # the curves mark the over-fitting the diagnosis finds
    "inference": {"config", "data", "device", "metrics", "models", "run", "task"},
    "reports": {"config", "data", "device", "inference", "metrics", "models", "plots", "run", "task"},
    "training": {"config", "data", "device", "distributed", "inference", "metrics", "models", "plots", "reports",
                 "run", "task"},
    "experiments": {"config", "data", "inference", "metrics", "models", "reports", "run", "task", "training"},
    "deploy": {"__init__", "config", "data", "device", "inference", "metrics", "models", "reports", "run", "task"},
    "lessons": {"config", "data", "inference", "metrics", "models", "plots", "reports", "run", "training"},
}
# Modules that import some of their own package inside functions: the command handlers (so that `imgclf --help`
# imports no torch), and the two ways into ONNX prediction, which must not import torch for an .onnx file.
LAZY = {"cli", "inference.load", "deploy.serve", "models", "training.learner"}


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def _imports() -> dict[str, list[tuple[str, bool]]]:
    """module -> [(imported module, inside a function)], for the package's own modules, TYPE_CHECKING left out."""
    modules = {_name(p): p for p in PACKAGE.rglob("*.py")}
    found: dict[str, list[tuple[str, bool]]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges: list[tuple[str, bool]] = []

        def visit(node: ast.AST, in_function: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                if isinstance(child, ast.ImportFrom) and child.level:
                    base = package[:len(package) - child.level + 1] + (child.module.split(".") if child.module else [])
                    for alias in child.names:
                        target = ".".join(base + [alias.name])
                        edges.append((target if target in modules else ".".join(base) or "__init__", inner))
                visit(child, inner)

        visit(ast.parse(path.read_text(encoding="utf-8")), False)
        found[name] = edges
    return found


def _part(module: str) -> str:
    return module.split(".")[0] if "." in module or (PACKAGE / module).is_dir() else module


def test_no_import_circle_among_the_package_modules():
    graph = {m: {t for t, _ in edges if t != m} for m, edges in _imports().items()}
    seen, path, circles = set(), [], []

    def walk(node: str) -> None:
        if node in path:
            circles.append(path[path.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            walk(nxt)
        path.pop()

    for module in sorted(graph):
        walk(module)
    assert circles == []


def test_each_stage_imports_only_the_stages_below_it():
    wrong = []
    for module, edges in _imports().items():
        part = _part(module)
        if part in ("cli", "callbacks", "__main__", "__init__"):
            continue  # the public face may import anything
        allowed = ALLOWED[part] | {part, "errors"} | (set() if part == "errors" else {"files", "downloads", "resources"})
        for target, _ in edges:
            if _part(target) not in allowed and target not in allowed:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_imports_inside_functions_only_keep_torch_out_of_a_fast_path():
    lazy = sorted({module for module, edges in _imports().items() if any(inner for _, inner in edges)
                   and module not in LAZY and _part(module) not in LAZY})
    assert lazy == []


def test_the_top_of_the_package_holds_only_the_public_face_and_the_shared_leaves():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "__main__", "callbacks", "config", "device", "distributed", "downloads", "errors",
                   "files", "resources", "run", "task"]
    too_long = [f"{p.relative_to(PACKAGE)}: {n}" for p in PACKAGE.rglob("*.py")
                if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450]
    assert too_long == []
