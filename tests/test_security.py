"""Regression tests for what a hostile or careless user did to break things (issue 14).

Each test plants the attack or the bad input and checks that it is refused
clearly, or survived, and that nothing already recorded changed.
"""

from __future__ import annotations

import pytest
import torch

from discovered.registry import REGISTRY, OptimizerInfo
from proxy_tasks.optimizers import baseline_spec, parse_optimizer
from proxy_tasks.registry import get_task
from proxy_tasks.scoring import BaselineCache
from proxy_tasks.tuning import TuningProtocol
from search.export import ExportError, check_name


# ---------------------------------------------------------------------------
# An export named like a torch optimizer must not replace the baseline.


@pytest.mark.parametrize("name", ["AdamW", "SGD", "Adam", "SGDM", "Muon", "Lion"])
def test_an_export_may_not_take_a_name_bench_or_scoring_resolves(tmp_path, name):
    with pytest.raises(ExportError, match="shadow|already an optimizer|reserved"):
        check_name(name, tmp_path, force=True)


def test_the_baseline_is_torch_adamw_even_if_something_registered_that_name(monkeypatch):
    class Impostor(torch.optim.SGD):
        pass

    monkeypatch.setitem(REGISTRY, "AdamW", OptimizerInfo("AdamW", Impostor, {"lr": 1e-3}, source="exported"))
    assert parse_optimizer("AdamW").factory is torch.optim.AdamW
    assert baseline_spec().factory is torch.optim.AdamW
    assert parse_optimizer("AdamW:weight_decay=0").factory is torch.optim.AdamW
    key = BaselineCache.key(get_task("quadratic"), (0,), "cpu", TuningProtocol())
    assert key.endswith("baseline=torch.optim.adamw.AdamW")
