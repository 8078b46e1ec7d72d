"""The package's structure, read from its source: layers, private names, family dispatch.

- **Layers**: a module imports (at module level or inside a function) only modules of its own
  layer or lower ones (`LAYERS`). `families` is the wiring module: every layer may import it
  (it imports nothing heavy at import time) and its lazily built parts reach every layer.
- **Private names** stay in their module: no ``from <another module> import _name``.
- **One family registry**: family names are compared, or used as dict keys, only in the
  registry and in the family packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "napari_focsam"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

#: Layer of each top-level module or subpackage; imports go to the same layer or below.
LAYERS = {
    "__init__": 0,
    "errors": 0,
    "families": 0,
    "models": 1,
    "weights": 1,
    "engine": 2,
    "store": 3,
    "api": 4,
    "evaluation": 5,
    "benchmarks": 5,
    "tracking": 5,
    "samples": 5,
    "cli": 6,
    "__main__": 6,
    "_qt": 6,
}
#: Modules whose function-level (lazy) imports may reach any layer.
WIRING = {f"{PACKAGE}.families"}
FAMILY_NAMES = {"sam", "sam1", "sam2", "focsam"}
#: Where family names may be compared: the registry and the family packages.
FAMILY_HOMES = ("families.py", "models/sam/", "models/sam2/", "models/focsam/")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out.append((".".join([PACKAGE, *parts]), path))
    return out


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str | None:
    """Absolute name of the module an ImportFrom refers to (None if outside the package)."""
    if node.level == 0:
        name = node.module or ""
        return name if name.split(".")[0] == PACKAGE else None
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path):
    """``(imported module, names, lineno, lazy)`` of every package-internal import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lazy_lines = {n.lineno for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, path, node)
            if target is not None:
                yield target, [a.name for a in node.names], node.lineno, node.lineno in lazy_lines
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield alias.name, [], node.lineno, node.lineno in lazy_lines


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top not in LAYERS:
        raise AssertionError(f"{module}: its top-level name {top!r} has no layer in LAYERS")
    return LAYERS[top]


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


MODULES = _modules()


def test_every_module_has_a_layer():
    for module, _ in MODULES:
        _layer(module)


def test_imports_respect_the_layers():
    problems = []
    for module, path in MODULES:
        for target, _, line, lazy in _imports(module, path):
            if module in WIRING and lazy:
                continue
            if _layer(target) > _layer(module):
                problems.append(f"{path.relative_to(SRC)}:{line} imports {target} (a higher layer)")
    assert not problems, "\n".join(problems)


def test_no_private_names_imported_from_other_modules():
    problems = []
    for module, path in MODULES:
        for target, names, line, _ in _imports(module, path):
            if target == module:
                continue
            for name in names:
                qualified = f"{target}.{name}"
                if name.startswith("_") and not name.startswith("__") and not _is_module(qualified):
                    problems.append(f"{path.relative_to(SRC)}:{line} imports {qualified}")
    assert not problems, "\n".join(problems)


def test_family_names_are_compared_only_in_the_registry_and_the_family_packages():
    problems = []
    for _, path in MODULES:
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(FAMILY_HOMES) or rel == FAMILY_HOMES[0]:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            strings: list[ast.AST] = []
            if isinstance(node, ast.Compare):
                strings = [node.left, *node.comparators]
                strings += [e for c in node.comparators if isinstance(c, (ast.Tuple, ast.List, ast.Set))
                            for e in c.elts]
            elif isinstance(node, ast.Dict):
                strings = [k for k in node.keys if k is not None]
            for s in strings:
                if isinstance(s, ast.Constant) and s.value in FAMILY_NAMES:
                    problems.append(f"{rel}:{s.lineno} uses the family name {s.value!r}")
    assert not problems, "\n".join(problems)


def test_modules_export_only_their_own_names():
    """No re-export shims: a module's ``__all__`` names what it defines (packages' ``__init__``
    files gather their modules' names)."""
    problems = []
    for _, path in MODULES:
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined, exported = set(), []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t for target in targets
                         for t in (target.elts if isinstance(target, ast.Tuple) else [target])]
                for target in names:
                    if isinstance(target, ast.Name):
                        defined.add(target.id)
                        if target.id == "__all__" and isinstance(node.value, (ast.List, ast.Tuple)):
                            exported = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
        problems += [f"{path.relative_to(SRC)} exports {name} without defining it"
                     for name in exported if name not in defined]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source, expected", [
    ("import napari_focsam.families\n", {"napari_focsam.families"}),
    ("from ..store import x\n", {"napari_focsam.store"}),
    ("from . import y\n", {"napari_focsam.api"}),
    ("import numpy\n", set()),
])
def test_the_import_reader_itself(tmp_path, source, expected):
    path = tmp_path / "segmenter.py"
    path.write_text(source)
    assert {t for t, *_ in _imports("napari_focsam.api.segmenter", path)} == expected
