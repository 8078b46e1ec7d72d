"""Importing the model and engine packages (and all their modules) must not pull in Qt or napari.

Each import runs in a fresh interpreter, so modules imported by other tests (or by pytest
plugins such as pytest-qt) cannot hide or fake a violation.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Top-level names that only the widget package (``napari_focsam._qt``) may import.
FORBIDDEN_PREFIXES = ("qtpy", "PyQt", "PySide", "napari", "magicgui", "superqt", "vispy")
ALLOWED = ("napari_focsam",)

# Imports the package and every submodule in it, then prints what ended up in sys.modules.
_PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module({module!r})
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def _is_forbidden(module_name: str) -> bool:
    top = module_name.split(".", 1)[0]
    return top not in ALLOWED and top.startswith(FORBIDDEN_PREFIXES)


def test_forbidden_filter():
    assert _is_forbidden("napari.layers")
    assert _is_forbidden("napari_plugin_engine")
    assert _is_forbidden("PyQt6.QtCore")
    assert _is_forbidden("qtpy")
    assert not _is_forbidden("napari_focsam.engine")
    assert not _is_forbidden("torch")


@pytest.mark.parametrize("module", ["napari_focsam.models", "napari_focsam.engine", "napari_focsam.store",
                                    "napari_focsam.weights", "napari_focsam.api",
                                    "napari_focsam.tracking", "napari_focsam.evaluation"])
def test_headless_packages_do_not_import_gui(module):
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr}"
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    offenders = sorted(name for name in loaded if _is_forbidden(name))
    assert not offenders, f"importing {module} imported GUI modules: {offenders}"
