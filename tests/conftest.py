"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def baseline_cache(tmp_path_factory):
    """One AdamW baseline cache for the whole test session (baselines are costly)."""
    return tmp_path_factory.mktemp("baselines") / "baselines.json"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run single-threaded, as workers do (and as CI's 2 cores prefer)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
