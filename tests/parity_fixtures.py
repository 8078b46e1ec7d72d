"""Where the parity fixtures live and how they are loaded (shared by conftest and tests).

Files are looked for in ``$FOCSAM_PARITY_DIR`` when it is set, else in ``<repo>/../shared/parity``
and in the repository's own ``tests/parity``; a name found in both is taken from the first.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PARITY_KINDS = ("sam1", "focsam", "sam2", "tinyvit", "amg")


def parity_dirs() -> list[Path]:
    """Folders holding the parity fixtures, in order of preference."""
    env = os.environ.get("FOCSAM_PARITY_DIR")
    if env:
        return [Path(env)]
    return [REPO_ROOT.parent / "shared" / "parity", REPO_ROOT / "tests" / "parity"]


def parity_files(kind: str) -> list[Path]:
    """Every fixture file of ``kind`` (``sam1``, ``focsam``, ``sam2``, ``tinyvit``, ``amg``),
    sorted by name; a name present in several folders is taken from the first."""
    found: dict[str, Path] = {}
    for folder in parity_dirs():
        for path in sorted(folder.glob(f"{kind}_*.pt")):
            found.setdefault(path.name, path)
    return [found[name] for name in sorted(found)]


@functools.lru_cache(maxsize=4)
def load_parity_fixture(path: Path) -> dict:
    """Load (once per session) a fixture with ``torch.load(weights_only=True)``."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
