"""Shared test configuration: discovery of the official parity fixtures.

A test that takes an argument ``sam1_fixture`` (or ``focsam_fixture``, ``sam2_fixture``) runs
once per matching ``<kind>_*.pt`` file in ``$FOCSAM_PARITY_DIR`` (default:
``<repo>/../shared/parity``) and is skipped when the folder holds no file of that kind.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PARITY_KINDS = ("sam1", "focsam", "sam2")


def parity_dir() -> Path:
    """Folder holding the parity fixtures."""
    env = os.environ.get("FOCSAM_PARITY_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "parity"


def parity_files(kind: str) -> list[Path]:
    """Every fixture file of ``kind`` (``sam1``, ``focsam``, ``sam2``), sorted."""
    return sorted(parity_dir().glob(f"{kind}_*.pt"))


@functools.lru_cache(maxsize=4)
def load_parity_fixture(path: Path) -> dict:
    """Load (once per session) a fixture with ``torch.load(weights_only=True)``."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for kind in PARITY_KINDS:
        name = f"{kind}_fixture"
        if name not in metafunc.fixturenames:
            continue
        files = parity_files(kind)
        if files:
            metafunc.parametrize(name, files, ids=[f.stem for f in files], indirect=True)
        else:
            reason = f"no {kind}_*.pt parity fixture in {parity_dir()}"
            metafunc.parametrize(name, [pytest.param(None, marks=pytest.mark.skip(reason=reason))],
                                 indirect=True)


def _fixture_loader(request: pytest.FixtureRequest) -> dict:
    data = load_parity_fixture(request.param)
    return {**data, "path": request.param}


@pytest.fixture
def sam1_fixture(request: pytest.FixtureRequest) -> dict:
    """A loaded ``sam1_*.pt`` fixture (dict) with its ``path`` added."""
    return _fixture_loader(request)


@pytest.fixture
def focsam_fixture(request: pytest.FixtureRequest) -> dict:
    """A loaded ``focsam_*.pt`` fixture (dict) with its ``path`` added."""
    return _fixture_loader(request)


@pytest.fixture
def sam2_fixture(request: pytest.FixtureRequest) -> dict:
    """A loaded ``sam2_*.pt`` fixture (dict) with its ``path`` added."""
    return _fixture_loader(request)
