"""The evaluation package is headless: importing it (all modules) pulls in no Qt / napari."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import importlib, json, pkgutil, sys
import napari_focsam.cli.evaluate
package = importlib.import_module("napari_focsam.evaluation")
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""

FORBIDDEN = ("qtpy", "PyQt", "PySide", "napari", "magicgui", "superqt", "vispy")


def test_evaluation_does_not_import_gui():
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    offenders = sorted(m for m in loaded
                       if m.split(".")[0] != "napari_focsam" and m.startswith(FORBIDDEN))
    assert not offenders
