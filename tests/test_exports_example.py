"""The quickstart's example export, examples/quickstart_example.py: it imports from there and keeps the contract.

It lived in discovered/ (registered), so every checkout shipped a search's find as if it were a reference
optimizer; it is an example of what `optsearch export` writes, not part of the package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import test_conformance as conformance
from discovered.registry import ErrorInput, OptimizerInfo

EXAMPLE = Path(__file__).parents[1] / "examples" / "quickstart_example.py"


@pytest.fixture(scope="module")
def info():
    spec = importlib.util.spec_from_file_location("quickstart_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return OptimizerInfo("QuickstartExample", module.QuickstartExample, {"lr": 0.263, "adamw_lr": 3e-2},
                         (ErrorInput({"lr": -1.0}, "Invalid learning rate"),
                          ErrorInput({"route": "sideways"}, "Invalid route"),
                          ErrorInput({"beta": 2.5}, "Invalid beta")),
                         matrix=True, no_momentum={"beta": 0.0}, source="exported")


def test_the_example_is_no_longer_part_of_the_discovered_package():
    import discovered
    from discovered import REGISTRY

    assert "QuickstartExample" not in REGISTRY and not hasattr(discovered, "QuickstartExample")
    assert not (Path(discovered.__file__).parent / "quickstart_example.py").exists()


@pytest.mark.parametrize("check", [
    conformance.test_state_dict_round_trip_is_bit_exact, conformance.test_closure_runs_with_grad_and_returns_the_loss,
    conformance.test_param_groups_keep_their_own_settings, conformance.test_parameters_without_grad_are_skipped,
    conformance.test_gradients_are_never_written_into, conformance.test_sparse_gradients_are_refused,
    conformance.test_invalid_hyperparameters_raise_value_error, conformance.test_lr_schedulers_drive_the_step,
    conformance.test_zero_gradients_give_no_nan, conformance.test_loss_falls_on_a_small_problem,
    conformance.test_batch_dims_update_each_copy_as_if_alone, conformance.test_routing,
    conformance.test_unknown_keywords_raise_type_error,
], ids=lambda check: check.__name__.removeprefix("test_"))
def test_the_example_keeps_the_torch_optim_contract(info, check):
    check(info)


def test_the_example_reproduces_its_program(info):
    from primitives.library import ALL
    from primitives.serialize import parse
    from search.export import agrees_with_program

    program = parse("""program quickstart
  state m: PARAM = 0
  const beta = 0.857207146737573, wd = 0.0
  m = interp(g, m; beta)
  c = interp(g, m; beta)
  o = polar(c)
  o = aspect_scale(o)
  u = add_scaled(o, w; wd)
  return u
""")
    agree, why = agrees_with_program(info.cls, program, ALL)
    assert agree, why
    assert torch.optim.Optimizer in info.cls.__mro__
