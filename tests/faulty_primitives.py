"""A test-only primitive set whose ops fail in every way a candidate can.

Loaded by the search as the plugin "faulty_primitives:FAULTY" (workers
import it by name, which is why it lives in a module of its own).
"""

from __future__ import annotations

import os
import time

import torch

from primitives import ALL, Primitive
from primitives.primitive import elementwise


def boom(x):
    """Raises."""
    raise RuntimeError("boom: this primitive always raises")


def nan(x):
    """Returns NaN everywhere."""
    return x * float("nan")


def hang(x):
    """Never returns (until killed)."""
    time.sleep(3600)
    return x


def die(x):
    """Kills its process without a word."""
    os._exit(3)


# Just above the fault test's workers.memory_gb = 1 and far below the machine's memory:
# only the worker's limit (RLIMIT_AS) makes this allocation fail (tests/test_oracles.py
# checks that it succeeds without one).
HOG_BYTES = 3 << 29  # 1.5 GiB


def hog(x):
    """Asks for 1.5 GiB (address space, left untouched): more than a worker limited to 1 GiB may have."""
    block = torch.empty(HOG_BYTES, dtype=torch.uint8)
    return x + block[:0].sum()  # 0: the block is held while the result is made


def _faulty(name, fn):
    return Primitive(name, 1, elementwise, fn, fn, cost=1.0, doc=fn.__doc__, category="test")


FAULTY = ALL.subset("faulty-base", ["sign", "interp", "add", "square"]).extend(
    "faulty", [_faulty(n, f) for n, f in (("boom", boom), ("nan", nan), ("hang", hang), ("die", die), ("hog", hog))])
