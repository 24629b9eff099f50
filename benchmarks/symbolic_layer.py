"""What the symbolic layer costs, against what a candidate's training costs: is it worth making faster?

    python benchmarks/symbolic_layer.py [--programs 2000] [--space elementwise|all]

A stream of programs is made the way the search makes them: children of a
population seeded with the warm starts, by the search's own mutation
operator. Per program, on one thread:

  generation   make_child: mutate, validate, prune, hash, re-mutate until new
  symbolic     validate + prune + structural hash of a finished program
  fingerprint  decode from JSON (as a worker receives it) and fingerprint (the
               probe: a few steps through the interpreter)

and, beside them, one candidate's cheap-tier evaluation (Lion as a program,
the quickstart's protocol, baselines cached), so that the layer's cost per
trained candidate reads as a share of the search's (the Lion search generated
about ten valid programs per trained one: 89% cache hits).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from primitives.analysis import prune
from primitives.fingerprint import fingerprint
from primitives.hashing import structural_hash
from primitives.known import KNOWN_PROGRAMS, LION
from primitives.library import PRIMITIVE_SETS
from primitives.program import validate
from primitives.serialize import from_dict, to_dict
from search.mutation import Limits, make_child

WARM_STARTS = {"elementwise": ["adamw", "lion", "signum", "rmsprop", "sgd_momentum"],
               "all": ["adamw", "lion", "muon", "polargrad", "shampoo", "adafactor"]}
GENERATED_PER_TRAINED = 10  # the Lion search's ratio (89% cache hits)


def stream(space: str, count: int, seed: int = 0):
    """(children, seconds spent making them, mutations tried) from a drifting population."""
    primitive_set = PRIMITIVE_SETS[space]
    rng = np.random.default_rng(seed)
    population = [KNOWN_PROGRAMS[name] for name in WARM_STARTS[space]]
    seen = {structural_hash(p) for p in population}
    children, attempts = [], 0
    start = time.perf_counter()
    while len(children) < count:
        parent = population[int(rng.integers(len(population)))]
        child = make_child(parent, rng, primitive_set, lambda h: h not in seen, Limits(24, 4))
        if child is None:
            continue
        attempts += child.attempts
        seen.add(child.structural_hash)
        children.append(child.program)
        population.append(child.program)
        if len(population) > 100:  # age out the oldest, as regularized evolution does
            population.pop(0)
    return children, time.perf_counter() - start, attempts


def per_program(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items)


def cheap_tier_seconds(space: str) -> float:
    from search import config as config_module
    from search.evaluation import ProxyTaskEvaluator
    from search.records import JobKind

    with tempfile.TemporaryDirectory() as folder:
        config = config_module.load("quickstart", overrides=[f"evaluation.baseline_cache={folder}/b.json"])
        evaluator = ProxyTaskEvaluator(config, PRIMITIVE_SETS[space], f"{folder}/b.json")
        for task in evaluator.stages[JobKind.CHEAP]:
            evaluator.baselines.baseline(task, evaluator.seeds, "cpu", evaluator.protocol)
        evaluator.evaluate(LION, JobKind.CHEAP)  # first-call costs
        start = time.perf_counter()
        evaluator.evaluate(LION, JobKind.CHEAP)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=2000)
    parser.add_argument("--space", default="elementwise", choices=sorted(WARM_STARTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    primitive_set = PRIMITIVE_SETS[args.space]
    children, generation_seconds, attempts = stream(args.space, args.programs)
    payloads = [to_dict(p) for p in children]

    def symbolic(program):
        validate(program, primitive_set)
        structural_hash(prune(program), primitive_set, pruned=True)

    def fingerprinted(payload):
        fingerprint(from_dict(payload, primitive_set), primitive_set=primitive_set)

    rows = {"generation (make_child, per new child)": generation_seconds / len(children),
            "symbolic (validate, prune, hash)": per_program(symbolic, children),
            "fingerprint (decode, probe, hash)": per_program(fingerprinted, payloads)}
    candidate = cheap_tier_seconds(args.space)
    per_trained = GENERATED_PER_TRAINED * sum(rows.values())
    print(f"space {args.space}, {len(children)} programs ({attempts / len(children):.1f} mutations tried per "
          f"new child), one thread\n")
    print("| work | ms per program |\n|---|---:|")
    for label, seconds in rows.items():
        print(f"| {label} | {seconds * 1e3:.2f} |")
    print(f"| **one candidate's cheap tier (Lion, quickstart protocol)** | **{candidate * 1e3:,.0f}** |")
    print(f"\nper trained candidate, {GENERATED_PER_TRAINED} programs generated and fingerprinted: "
          f"{per_trained * 1e3:.1f} ms, {100 * per_trained / candidate:.2f}% of its cheap tier alone")


if __name__ == "__main__":
    main()
