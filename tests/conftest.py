"""Shared test configuration: discovery of the official parity fixtures, threads per worker.

A test that takes an argument ``sam1_fixture`` (or ``focsam_fixture``, ``sam2_fixture``,
``tinyvit_fixture``, ``amg_fixture``) runs once per matching ``<kind>_*.pt`` file and is skipped
when none is found. Files are looked for in ``$FOCSAM_PARITY_DIR`` when it is set, else in
``<repo>/../shared/parity`` and in the repository's own ``tests/parity`` (small fixtures
shipped with the code, recorded by ``scripts/parity/``); a name found in both is taken from the
first.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from parity_fixtures import PARITY_KINDS, load_parity_fixture, parity_dirs, parity_files

# kernel choices measured by the tests' inference-sized calls stay out of the user's cache
os.environ.setdefault("NAPARI_FOCSAM_KERNEL_CACHE",
                      str(Path(tempfile.mkdtemp(prefix="focsam-kernels-")) / "kernels.json"))


def _share_cores_between_workers() -> None:
    """Under pytest-xdist, give each worker its share of the cores for torch's intra-op
    threads: N workers each running ``cpu_count`` OpenMP threads oversubscribe the machine."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


_share_cores_between_workers()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures(...)``): tiny
    tensors run as fast on one thread and are far less hurt by a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for kind in PARITY_KINDS:
        name = f"{kind}_fixture"
        if name not in metafunc.fixturenames:
            continue
        files = parity_files(kind)
        if files:
            metafunc.parametrize(name, files, ids=[f.stem for f in files], indirect=True)
        else:
            folders = " or ".join(str(d) for d in parity_dirs())
            reason = f"no {kind}_*.pt parity fixture in {folders}"
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


@pytest.fixture
def tinyvit_fixture(request: pytest.FixtureRequest) -> dict:
    """A loaded ``tinyvit_*.pt`` fixture (dict) with its ``path`` added."""
    return _fixture_loader(request)


@pytest.fixture
def amg_fixture(request: pytest.FixtureRequest) -> dict:
    """A loaded ``amg_*.pt`` fixture (automatic mask generation, ``amg_sam1_*`` and
    ``amg_sam2_*``) with its ``path`` added."""
    return _fixture_loader(request)
