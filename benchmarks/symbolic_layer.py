"""Throughput of the symbolic layer, per core, on the programs a search generates.

    python benchmarks/symbolic_layer.py [--programs 3000] [--space elementwise|all] [--repeats 9]

A stream of programs is made the way the search makes them: children of a
population seeded with the warm starts, by the search's own mutation
operator. On that stream, side by side in one process (one thread):

  generation   make_child: mutate, validate, prune, hash, re-mutate until new
  symbolic     validate + prune + structural hash of a finished program
  fingerprint  the behavioural fingerprint (runs the program on the probe) of
               programs decoded from JSON, as a worker receives them, with
               the probe's memory kept across the stream, as a search worker
               keeps it (and, as the worker's jobs, decoding included); dealt
               in turn to two workers' memories; and with a fresh memory for
               every program
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from primitives.analysis import prune
from primitives.fingerprint import fingerprint
from primitives.probe import PROBE_BATCH, PROBE_OPTIONS, PROBE_STEPS, ProbeMemo
from primitives.hashing import structural_hash
from primitives.known import KNOWN_PROGRAMS
from primitives.library import PRIMITIVE_SETS
from primitives.program import validate
from primitives.serialize import from_dict, to_dict
from search.mutation import Limits, make_child

WARM_STARTS = {"elementwise": ["adamw", "lion", "signum", "rmsprop", "sgd_momentum"],
               "all": ["adamw", "lion", "muon", "polargrad", "shampoo", "adafactor"]}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=3000)
    parser.add_argument("--space", default="elementwise", choices=sorted(WARM_STARTS))
    parser.add_argument("--fingerprints", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=9, help="passes over the stream (median kept)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    primitive_set = PRIMITIVE_SETS[args.space]

    children, generation_seconds, attempts = stream(args.space, args.programs)
    sizes = [len(p.body) for p in children]

    # Microseconds a program, so the pass is timed several times and the median
    # kept: on a shared machine one pass can run 20% slow.
    passes = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for program in children:
            validate(program, primitive_set)
            structural_hash(prune(program), primitive_set, pruned=True)
        passes.append(time.perf_counter() - start)
    symbolic_seconds = float(np.median(passes))

    # A worker fingerprints a program decoded from its JSON job: statements are new objects, not the
    # parent's (nothing may ride on object identity). Decoding is the job's cost, not the fingerprint's.
    sample = [from_dict(to_dict(program), primitive_set) for program in children[: args.fingerprints]]

    def fresh() -> ProbeMemo:
        return ProbeMemo(primitive_set, PROBE_OPTIONS, PROBE_STEPS, PROBE_BATCH, 0.0)

    def fingerprint_pass(workers: int | None) -> tuple[float, float]:
        """(seconds for the sample, share of statements found), every program new to the memories.

        workers: the sample dealt in turn to this many memories (a search's
        workers each keep one; a child's parent was often fingerprinted by
        another), or None: a fresh memory for every program.
        """
        memories = [fresh() for _ in range(workers or 1)]
        start = time.perf_counter()
        for k, program in enumerate(sample):
            memo = memories[k % workers] if workers else fresh()
            fingerprint(program, primitive_set=primitive_set, memo=memo)
        seconds = time.perf_counter() - start
        if not workers:
            return seconds, 0.0
        return seconds, 1 - sum(m.statements_run for m in memories) / sum(m.statements_seen for m in memories)

    def job_pass() -> float:
        """Seconds for the sample as one worker's fingerprint jobs: decode (which validates), fingerprint."""
        payloads = [to_dict(program) for program in sample]
        memo = fresh()
        start = time.perf_counter()
        for payload in payloads:
            fingerprint(from_dict(payload, primitive_set), primitive_set=primitive_set, memo=memo, validated=True)
        return time.perf_counter() - start

    def memory_row(label: str, workers: int | None) -> tuple[str, list[float]]:
        results = [fingerprint_pass(workers) for _ in range(args.repeats)]
        if workers:
            label += f" ({100 * results[-1][1]:.0f}% of statements found)"
        return label, [seconds for seconds, _ in results]

    rows = [memory_row("memory kept across the stream, as one worker keeps it", 1),
            ("one worker's jobs, decoding included (from_dict validates; the fingerprint does not again)",
             [job_pass() for _ in range(args.repeats)]),
            memory_row("the stream dealt to 2 workers' memories in turn", 2),
            memory_row("fresh memory for each program", None)]

    print(f"space {args.space}: {len(children)} children, {np.mean(sizes):.1f} statements on average "
          f"(max {max(sizes)}), {attempts / len(children):.2f} mutations tried per child; torch "
          f"{torch.__version__}, 1 thread\n")
    print("| stage | programs / s / core |\n|---|---:|")
    print(f"| generation (make_child: mutate until valid and new) | {len(children) / generation_seconds:,.0f} |")
    print(f"| mutations tried (each validated, pruned, hashed) | {attempts / generation_seconds:,.0f} |")
    print(f"| validate + prune + structural hash (median of {args.repeats} passes; "
          f"fastest {len(children) / min(passes):,.0f}, slowest {len(children) / max(passes):,.0f}) | "
          f"{len(children) / symbolic_seconds:,.0f} |")
    for label, seconds in rows:
        print(f"| behavioural fingerprint, {label} (median of {args.repeats} passes; fastest "
              f"{len(sample) / min(seconds):,.0f}, slowest {len(sample) / max(seconds):,.0f}) | "
              f"{len(sample) / float(np.median(seconds)):,.0f} |")


if __name__ == "__main__":
    main()
