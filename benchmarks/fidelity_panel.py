"""The fidelity panel: the optimizers a suite must rank the way its targets do (DESIGN.md, "Fidelity is the gate").

One source of truth for benchmarks/fidelity.py and its test. Three groups:

  * references: the optimizers the project compares against, as
    proxy_tasks.optimizers.parse_optimizer names them (a class with keywords)
    or as a program of primitives/known.py;
  * within-family pairs: one constant moved in a reference (Lion's beta2,
    Signum's beta, Muon's momentum, AdamW's weight decay, EMA-SGD's beta),
    whose order a suite must get right although the two differ by little;
  * random children of the search's warm starts, made by the search's own
    mutation operators (search/mutation.py) from a fixed numpy seed, pruned and
    distinct by structural hash: what a search actually has to rank.

Every member is data (`Member.record()`): its name, family, and either its
program as JSON (primitives.serialize.to_dict) or its class name and keywords.

Classes versus programs. Where the reference class takes the keyword, the
class is used (Lion betas, Muon momentum, AdamW weight_decay). Signum and
EMA-SGD have no class: they are programs with a constant changed. SOAP,
Adafactor and Shampoo are the programs of primitives/known.py, not the
classes: discovered.SOAP and torch.optim.Adafactor are not batchable
(REGISTRY / ELEMENTWISE_TORCH), so proxy_tasks/runner.py's train_grid would
train them one seed and one rate at a time, 20-30x the runs of a batched
member; their programs run batched over seeds and rates (benchmarks/fidelity.py's
docstring has the details).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from primitives import known
from primitives.analysis import uses_matrix_primitives
from primitives.hashing import structural_hash
from primitives.library import ALL
from primitives.program import Program, validate
from primitives.serialize import parse, to_dict
from proxy_tasks.optimizers import OptimizerSpec, parse_optimizer
from search.mutation import make_child

# The random children: drawn from this seed, so the panel is the same in every run and process.
CHILD_SEED = 20261203
CHILD_COUNT = 10
# The search's warm starts the children descend from (cycled in this order).
WARM_STARTS: tuple[Program, ...] = (known.ADAMW, known.LION, known.SIGNUM, known.SGD_MOMENTUM, known.MUON)
# Reference classes whose update is normalised as a matrix: muP carries their rate to a wider model unchanged.
MATRIX_CLASSES = {"Muon", "PolarGrad", "SOAP"}

# SGD with an EMA of gradients as momentum: m <- beta m + (1 - beta) g, w <- w - lr m. Unlike SGDM's
# sum (m <- beta m + g) its step size does not grow with 1 / (1 - beta), so beta changes only the memory.
EMA_SGD = parse("""
program ema_sgd
state m: PARAM = 0
const beta = 0.9
m = interp(g, m; beta)
return m
""")


@dataclasses.dataclass(frozen=True)
class Member:
    """One panel member: a reference class with keywords, or a program."""

    name: str
    family: str
    optimizer: str | None = None  # a parse_optimizer name (class or alias), when not a program
    kwargs: tuple[tuple[str, Any], ...] = ()
    program: Program | None = None
    origin: str = ""  # how a random child was made (its mutations), for the record

    def spec(self) -> OptimizerSpec:
        if self.program is not None:
            return OptimizerSpec.for_program(self.program, name=self.name)
        spec = parse_optimizer(self.optimizer)
        if not self.kwargs:
            return spec
        # Set the keywords on the parsed spec (parse_optimizer's text form cannot write a tuple such as
        # Lion's betas); a probe step checks the class accepts them before anything trains.
        spec = dataclasses.replace(spec, name=self.name, kwargs=tuple(sorted({**dict(spec.kwargs),
                                                                               **dict(self.kwargs)}.items())))
        import torch

        spec.make({"probe": torch.nn.Parameter(torch.zeros(2, 2))}, (), 1e-3, 1e-3, batch_dims=0)
        return spec

    @property
    def matrix_update(self) -> bool:
        """Whether the update is normalised as a matrix (muP's rule for carrying the rate: search/transfer.py)."""
        if self.program is not None:
            return uses_matrix_primitives(self.program, ALL)
        return self.optimizer.partition(":")[0] in MATRIX_CLASSES

    def record(self) -> dict[str, Any]:
        """The member as data (benchmarks/results/fidelity.json)."""
        if self.program is not None:
            entry = {"program": to_dict(self.program)}
        else:
            entry = {"optimizer": self.optimizer, "kwargs": {k: list(v) if isinstance(v, tuple) else v
                                                             for k, v in self.kwargs}}
        return {"name": self.name, "family": self.family, **entry, **({"origin": self.origin} if self.origin else {})}


def _program(base: Program, name: str, **constants: float) -> Program:
    program = dataclasses.replace(base.with_constants(**constants) if constants else base, name=name)
    validate(program, ALL)
    return program


def references() -> list[Member]:
    """The reference optimizers and the within-family pairs (a family with two or more members is a pair set)."""
    cls = lambda name, family, optimizer, **kw: Member(name, family, optimizer, tuple(sorted(kw.items())))  # noqa: E731
    prog = lambda name, family, base, **c: Member(name, family, program=_program(base, name, **c))  # noqa: E731
    return [
        # AdamW: the default (weight decay 0.01) is the baseline itself, scored 0 everywhere by construction.
        cls("AdamW", "adamw", "AdamW"),
        cls("AdamW-wd0", "adamw", "AdamW", weight_decay=0.0),
        cls("AdamW-wd0.1", "adamw", "AdamW", weight_decay=0.1),
        cls("SGDM", "sgdm", "SGDM"),
        cls("Lion-b2-0.99", "lion", "Lion", betas=(0.9, 0.99)),
        cls("Lion-b2-0.95", "lion", "Lion", betas=(0.9, 0.95)),
        prog("Signum-b0.9", "signum", known.SIGNUM, beta=0.9),
        prog("Signum-b0.75", "signum", known.SIGNUM, beta=0.75),
        prog("EMA-SGD-b0.94", "ema_sgd", EMA_SGD, beta=0.94),
        prog("EMA-SGD-b0.86", "ema_sgd", EMA_SGD, beta=0.86),
        cls("Muon-m0.95", "muon", "Muon", momentum=0.95),
        cls("Muon-m0.85", "muon", "Muon", momentum=0.85),
        cls("PolarGrad", "polargrad", "PolarGrad"),
        prog("SOAP", "soap", known.SOAP),
        prog("Adafactor", "adafactor", known.ADAFACTOR),
        prog("Shampoo", "shampoo", known.SHAMPOO),
        prog("one-sided-Shampoo", "one_sided_shampoo", known.ONE_SIDED_SHAMPOO),
    ]


def random_children(count: int = CHILD_COUNT, seed: int = CHILD_SEED, taken: set[str] | None = None) -> list[Member]:
    """`count` children of WARM_STARTS (cycled), each valid, pruned and structurally new (search/mutation.py)."""
    rng = np.random.default_rng(seed)
    seen = set(taken or ()) | {structural_hash(p, ALL) for p in WARM_STARTS}
    children = []
    for i in range(count):
        parent = WARM_STARTS[i % len(WARM_STARTS)]
        child = make_child(parent, rng, ALL, is_new=lambda digest: digest not in seen)
        if child is None:  # make_child gave up (200 attempts): never seen with these parents
            raise RuntimeError(f"no new child of {parent.name} after make_child's attempts")
        seen.add(child.structural_hash)
        name = f"child{i}-{parent.name}"
        children.append(Member(name, "child", program=dataclasses.replace(child.program, name=name),
                               origin=f"{child.structural_hash} {child.mutation}"))
    return children


@functools.lru_cache(maxsize=1)
def _panel() -> tuple[Member, ...]:
    refs = references()
    taken = {structural_hash(m.program, ALL) for m in refs if m.program is not None}
    return tuple(refs + random_children(taken=taken))


def panel() -> list[Member]:
    """Every member, references first (the same list in every process: the children come from CHILD_SEED)."""
    return list(_panel())


def pairs(members: list[Member]) -> list[tuple[Member, Member]]:
    """Every within-family pair: two members of one family other than the children."""
    out = []
    for i, a in enumerate(members):
        for b in members[i + 1:]:
            if a.family == b.family and a.family != "child":
                out.append((a, b))
    return out
