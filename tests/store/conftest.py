"""Fixtures of the embedding-store tests (helpers live in ``store_helpers``)."""

from __future__ import annotations

import numpy as np
import pytest
from store_helpers import FakeEncoder, make_stack


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture
def stack() -> np.ndarray:
    return make_stack()
