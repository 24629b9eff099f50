"""Shared fixtures, and the Hypothesis profile every run uses."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# A fixed seed: CI sees the same examples every time, and a failure reproduces. Explore with
# HYPOTHESIS_PROFILE=explore (fresh random examples each run).
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
    for item in items:
        if item.get_closest_marker("ray"):  # a local Ray head and searches on its actors: end to end
            item.add_marker(pytest.mark.e2e)
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
