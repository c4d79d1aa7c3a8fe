"""Fixtures shared by the validator's tests that run it for real."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def axon_cache(tmp_path_factory):
    """One axon-py cache for the real runs of a session (RunOptions.cache_dir): a tiny model is
    converted with optimum once, not once per run."""
    return tmp_path_factory.mktemp("axon-cache")
