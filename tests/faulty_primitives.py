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


def hog(x):
    """Asks for far more memory than a worker may have."""
    return x + torch.empty(1 << 36, dtype=torch.uint8).sum()  # 64 GiB


def _faulty(name, fn):
    return Primitive(name, 1, elementwise, fn, fn, cost=1.0, doc=fn.__doc__, category="test")


FAULTY = ALL.subset("faulty-base", ["sign", "interp", "add", "square"]).extend(
    "faulty", [_faulty(n, f) for n, f in (("boom", boom), ("nan", nan), ("hang", hang), ("die", die), ("hog", hog))])
