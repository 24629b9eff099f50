"""GPU code paths: the same results on CUDA as on the CPU. Skipped without CUDA."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from discovered import SOAP, Lion, Muon, PolarGrad, ProgramOptimizer
from helpers import default_consts
from primitives import ALL, ExecutionOptions, Layout
from primitives.known import ADAMW, MUON, ONE_SIDED_SHAMPOO, SHAMPOO, SHAMPOO_GRAFTED
from primitives.known import SOAP as SOAP_PROGRAM
from test_primitives import sample_arguments  # every primitive's arguments (a basis refreshed at t = k + 1)
from proxy_tasks.optimizers import parse_optimizer
from proxy_tasks.registry import TASKS
from proxy_tasks.runner import train

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _exact_matmuls():
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # compare like with like
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.mark.parametrize("name", ALL.names)
@pytest.mark.parametrize("layout", list(Layout))
def test_primitives_agree_on_cuda(name, layout):
    prim = ALL.get(name)
    args = sample_arguments(prim, layout, seed=3)
    options = ExecutionOptions(polar_backend="qdwh")
    on_cpu = prim.bind(layout, default_consts(prim), options)(*args)
    on_gpu = prim.bind(layout, default_consts(prim), options)(*(a.cuda() for a in args))
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-7, atol=1e-9)


def _run(make, device, dtype=torch.float64, steps=20):
    g = torch.Generator().manual_seed(0)
    shapes = [(12, 8), (8, 12), (4, 3, 2, 2), (9,)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype).to(device)) for s in shapes]
    optimizer = make(params)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=dtype).to(device)
        optimizer.step()
    return [p.detach().cpu() for p in params]


@pytest.mark.parametrize("make,atol", [
    (lambda p: Lion(p, lr=1e-2, weight_decay=0.1), 1e-12),  # the foreach path on CUDA
    (lambda p: Muon(p, lr=0.02, ns_dtype="float32"), 1e-5),
    (lambda p: PolarGrad(p, lr=1e-3), 1e-9),
    (lambda p: ProgramOptimizer(p, ADAMW, lr=1e-2), 1e-12),
    (lambda p: ProgramOptimizer(p, MUON, lr=0.02, options=ExecutionOptions(polar_backend="svd")), 1e-9),
    (lambda p: ProgramOptimizer(p, SHAMPOO, lr=1e-2), 1e-9),
    (lambda p: ProgramOptimizer(p, ONE_SIDED_SHAMPOO, lr=1e-2), 1e-9),
    (lambda p: ProgramOptimizer(p, SHAMPOO_GRAFTED, lr=1e-2), 1e-9),
])
def test_optimizers_agree_on_cuda(make, atol):
    for a, b in zip(_run(make, "cuda"), _run(make, "cpu")):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)


def _integer_run(make, device, dtype=torch.float64, steps=12):
    """Square matrices with integer-valued gradients: statistics exact, and regular from the first step.

    (On the longer side of a non-square matrix SOAP's first statistic is singular, and eigh's basis of its
    null space is whatever the eigh algorithm makes of round-off: it differs between LAPACK and cuSOLVER.)
    """
    g = torch.Generator().manual_seed(0)
    shapes = [(6, 6), (8, 8), (9,)]
    params = [torch.nn.Parameter(torch.randint(-3, 4, s, generator=g).to(dtype).to(device)) for s in shapes]
    optimizer = make(params)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randint(-3, 4, p.shape, generator=g).to(dtype).to(device)
        optimizer.step()
    return [p.detach().cpu() for p in params]


@pytest.mark.parametrize("make", [
    lambda p: SOAP(p, lr=1e-2, precondition_frequency=3),
    lambda p: ProgramOptimizer(p, SOAP_PROGRAM, lr=1e-2, route="rule", constants={"k": 3, "wd": 0.0}),
], ids=["SOAP", "Program[soap]"])
def test_soap_agrees_on_cuda(make):
    for a, b in zip(_integer_run(make, "cuda"), _integer_run(make, "cpu")):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_soap_program_agrees_with_soap_on_cuda():
    ours = _integer_run(lambda p: SOAP(p, lr=1e-2, precondition_frequency=3, weight_decay=0.0), "cuda")
    program = _integer_run(lambda p: ProgramOptimizer(p, SOAP_PROGRAM, lr=1e-2, route="rule",
                                                      constants={"k": 3, "wd": 0.0}), "cuda")
    for a, b in zip(ours, program):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_bf16_muon_runs_on_cuda_close_to_fp32():
    bf16 = _run(lambda p: Muon(p, lr=0.02), "cuda", torch.float32)
    fp32 = _run(lambda p: Muon(p, lr=0.02, ns_dtype="float32"), "cuda", torch.float32)
    for a, b in zip(bf16, fp32):
        assert (a - b).abs().max() < 2e-2


@pytest.mark.parametrize("task", ["quadratic", "mlp", "char_lm"])
@pytest.mark.parametrize("optimizer", ["AdamW", "Muon"])
def test_proxy_tasks_train_on_cuda_like_on_cpu(task, optimizer):
    short = dataclasses.replace(TASKS[task], steps=10)
    spec = parse_optimizer(optimizer if optimizer == "AdamW" else "Muon:ns_dtype=float32")
    on_gpu = train(short, spec, 1e-3, (0, 1), device="cuda")
    on_cpu = train(short, spec, 1e-3, (0, 1), device="cpu")
    for a, b in zip(on_gpu, on_cpu):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-3)


def test_batched_tuning_on_cuda_chooses_and_scores_like_the_cpu():
    """All rates x seeds of a stage as one batch on the GPU: the same rate and close scores as on the CPU."""
    from proxy_tasks.tuning import tune

    short = dataclasses.replace(TASKS["quadratic"], steps=30)
    for spec in (parse_optimizer("AdamW"), parse_optimizer("program:muon")):
        on_gpu = tune(short, spec, (0, 1), device="cuda")
        on_cpu = tune(short, spec, (0, 1), device="cpu")
        assert on_gpu.best_lr == pytest.approx(on_cpu.best_lr, rel=1e-5)
        for a, b in zip(on_gpu.best, on_cpu.best):
            assert a.train_loss == pytest.approx(b.train_loss, rel=1e-3)


def test_a_search_worker_on_cuda_scores_a_candidate_like_one_on_the_cpu(tmp_path):
    from primitives.known import LION
    from primitives.serialize import to_dict
    from search import config as config_module
    from search.evaluation import ProxyTaskEvaluator
    from search.jobs import build_runner
    from search.records import Job, JobKind

    scores = {}
    for device in ("cuda", "cpu"):
        config = config_module.load("smoke", overrides=[f"evaluation.device={device}", "tracking.enabled=false",
                                                        f"evaluation.baseline_cache={tmp_path / 'b.json'}"])
        evaluator = ProxyTaskEvaluator(config, ALL, tmp_path / "b.json")
        for task in evaluator.all_tasks:
            evaluator.baselines.baseline(task, evaluator.seeds, device, evaluator.protocol)
        run = build_runner({"config": config.to_dict()})
        result = run(Job(0, JobKind.CHEAP, {"program": to_dict(LION)}))
        scores[device] = [entry["score"] for entry in result["tasks"].values()]
    assert scores["cuda"] == pytest.approx(scores["cpu"], abs=0.05)
