"""Candidates per GPU-hour: N worker processes sharing one GPU, the cheap tier and the full suite.

    python benchmarks/gpu_throughput.py [--workers 1,2,4,8] [--candidates 16] [--preset quickstart]

Needs CUDA (it says so and exits otherwise). For each N, N long-lived worker
processes (search/workers.py's pool, each with its own CUDA context and one
CPU thread, `evaluation.device=cuda`) evaluate the same candidates: the known
programs and seeded mutations of them, each on the cheap tier and then the
full suite, as a search's scheduler would hand them out. It reports
candidates per GPU-hour on each stage, full-suite evaluations per GPU-day,
and, for a few candidates, the score on the GPU beside the score on the CPU
(the same protocol; they differ by float round-off and TF32 only).
Baselines are tuned first, once per device, and cached in --baseline-cache.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from primitives.known import KNOWN_PROGRAMS
from primitives.library import ALL
from primitives.serialize import to_dict
from search import config as config_module
from search.evaluation import ProxyTaskEvaluator
from search.jobs import build_runner
from search.mutation import Limits, make_child
from search.records import Job, JobKind, Status
from search.workers import WorkerPool


def candidates(count: int, seed: int = 0) -> list:
    """The warm starts of matrix-space and seeded children of them (the same list every run)."""
    rng = np.random.default_rng(seed)
    parents = [KNOWN_PROGRAMS[name] for name in ("adamw", "lion", "muon", "polargrad", "shampoo")]
    programs, seen = list(parents), set()
    while len(programs) < count:
        child = make_child(parents[int(rng.integers(len(parents)))], rng, ALL, lambda h: h not in seen, Limits())
        if child is not None:
            seen.add(child.structural_hash)
            programs.append(child.program)
    return programs[:count]


def run_stage(pool: WorkerPool, programs: list, kind: JobKind) -> tuple[float, list]:
    """Seconds for all `programs` on one stage, and their results in order."""
    start, results, next_job, done = time.perf_counter(), [None] * len(programs), 0, 0
    while done < len(programs):
        while next_job < len(programs) and pool.free_slots():
            pool.submit(Job(next_job, kind, {"program": to_dict(programs[next_job])}))
            next_job += 1
        for completion in pool.poll(0.25):
            results[completion.job.id] = completion
            done += 1
    return time.perf_counter() - start, results


def mean_score(completion) -> float:
    if completion.status is not Status.OK:
        return float("nan")
    return statistics.fmean(t["score"] for t in completion.result["tasks"].values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--baseline-cache", default="bench_out/gpu_baselines.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure (run this on a GPU machine)")
        return
    Path(args.baseline_cache).parent.mkdir(parents=True, exist_ok=True)
    programs = candidates(args.candidates)
    configs = {device: config_module.load(args.preset, overrides=[
        f"evaluation.device={device}", f"evaluation.baseline_cache={args.baseline_cache}", "tracking.enabled=false"])
        for device in ("cuda", "cpu")}
    for device, config in configs.items():  # baselines once per device, in this process
        evaluator = ProxyTaskEvaluator(config, ALL, args.baseline_cache)
        for task in evaluator.all_tasks:
            evaluator.baselines.baseline(task, evaluator.seeds, device, evaluator.protocol)
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {len(programs)} candidates, "
          f"preset {args.preset}\n")
    print("| workers | cheap tier (s) | cheap candidates / GPU-hour | full suite (s) | full-suite evaluations / GPU-day |")
    print("|---:|---:|---:|---:|---:|")
    gpu_full = None
    for n in [int(x) for x in args.workers.split(",")]:
        pool = WorkerPool(n, build_runner, {"config": configs["cuda"].to_dict()}, timeout=3600)
        try:
            run_stage(pool, programs[:n], JobKind.FINGERPRINT)  # workers up, CUDA contexts made
            cheap_s, _ = run_stage(pool, programs, JobKind.CHEAP)
            full_s, gpu_full = run_stage(pool, programs, JobKind.FULL)
        finally:
            pool.close()
        print(f"| {n} | {cheap_s:.1f} | {len(programs) / cheap_s * 3600:,.0f} | {full_s:.1f} | "
              f"{len(programs) / (cheap_s + full_s) * 86400:,.0f} |")
    cpu_pool = WorkerPool(2, build_runner, {"config": configs["cpu"].to_dict()}, timeout=3600)
    try:
        _, cpu_full = run_stage(cpu_pool, programs[:4], JobKind.FULL)
    finally:
        cpu_pool.close()
    print("\n| candidate | full-suite score, GPU | CPU |\n|---|---:|---:|")
    for program, gpu, cpu in zip(programs[:4], gpu_full[:4], cpu_full):
        print(f"| {program.name or 'child'} | {mean_score(gpu):+.3f} | {mean_score(cpu):+.3f} |")


if __name__ == "__main__":
    main()
