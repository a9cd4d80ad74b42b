"""Shared pytest fixtures. Real components start for real; nothing here mocks a stage."""

from __future__ import annotations

import os

import numpy as np
import pytest

# Keep every test on the two cores we have and off the network.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
