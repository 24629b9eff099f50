"""Optimizer step time: ours against the published implementations, side by side.

    python benchmarks/optimizer_step.py [--device cpu|cuda] [--repeats 5] [--steps 20] [--matrix-steps 2]
        [--soap-steps 10] [--upstream-soap PATH/soap.py] [--only SOAP ...]

Parameters have the shapes of a small GPT (4 layers, d=256, vocab 512). Each
contender's step is timed on the same parameters and gradients, alternating
contenders within every repeat so that drift (thermal, other load) hits all
alike; the median over repeats is reported, and ratios are ours / theirs.
Matrix optimizers are compared on the 2-D hidden weights only (torch.optim.Muon
accepts nothing else); Lion, AdamW and SOAP on every parameter.

SOAP: the warm-up step is its first (eigh) step; the default 10 timed steps are
one precondition_frequency, so they hold one QR refresh of the eigenbases.
--upstream-soap adds a row for nikhilvyas/SOAP's soap.py from a local copy
(imported from that path; this script downloads nothing). --only keeps the
rows whose name starts with one of the given prefixes.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import torch

from discovered import SOAP, Lion, Muon, PolarGrad


def transformer_shapes(layers: int = 4, d: int = 256, vocab: int = 512) -> tuple[list, list]:
    """(hidden matrices, everything else) of a GPT-style model."""
    hidden, other = [], [(vocab, d), (vocab, d)]  # embedding, head
    for _ in range(layers):
        hidden += [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d)]  # qkv, proj, fc, mlp proj
        other += [(d,), (d,), (d,), (d,)]  # two LayerNorms: gain and bias
    return hidden, other


def make_params(shapes, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g).to(device)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(device)
    return params


def time_steps(optimizer, steps: int, device: str) -> float:
    """Seconds per step (after one warm-up step that creates the state)."""
    optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def load_upstream_soap(path: str):
    """The SOAP class of a local copy of nikhilvyas/SOAP's soap.py."""
    spec = importlib.util.spec_from_file_location("upstream_soap", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--upstream-soap: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SOAP


def contenders(hidden, everything, device, upstream_soap=None):
    import lion_pytorch

    all_params = lambda: make_params(everything, device)  # noqa: E731
    hidden_params = lambda: make_params(hidden, device)  # noqa: E731
    soap = {"SOAP (ours)": lambda: SOAP(all_params(), lr=3e-3)}
    if upstream_soap is not None:
        soap["SOAP (upstream soap.py)"] = lambda: upstream_soap(all_params(), lr=3e-3)
    return {
        "AdamW (torch, foreach)": lambda: torch.optim.AdamW(all_params(), lr=1e-3, foreach=True),
        "Lion (ours)": lambda: Lion(all_params(), lr=1e-4),
        "Lion (lion-pytorch)": lambda: lion_pytorch.Lion(all_params(), lr=1e-4),
        "Muon (ours)": lambda: Muon(hidden_params(), lr=0.02),
        "Muon (torch.optim)": lambda: torch.optim.Muon(hidden_params(), lr=0.02, weight_decay=0.0),
        "Muon fp32 NS (ours)": lambda: Muon(hidden_params(), lr=0.02, ns_dtype="float32"),
        "PolarGrad qdwh-2 (ours)": lambda: PolarGrad(hidden_params(), lr=0.02),
        "PolarGrad ns-5 (ours)": lambda: PolarGrad(hidden_params(), lr=0.02, method="ns", inner_steps=5),
        **soap,
    }


RATIOS = [
    ("Lion (ours)", "Lion (lion-pytorch)"),
    ("Lion (ours)", "AdamW (torch, foreach)"),
    ("Muon (ours)", "Muon (torch.optim)"),
    ("Muon fp32 NS (ours)", "Muon (torch.optim)"),
    ("PolarGrad ns-5 (ours)", "Muon (torch.optim)"),
    ("PolarGrad qdwh-2 (ours)", "Muon (torch.optim)"),
    ("SOAP (ours)", "SOAP (upstream soap.py)"),
    ("SOAP (ours)", "AdamW (torch, foreach)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of elementwise optimizers")
    parser.add_argument("--matrix-steps", type=int, default=2, help="timed steps of matrix optimizers")
    parser.add_argument("--soap-steps", type=int, default=10, help="timed steps of SOAP (10: one refresh)")
    parser.add_argument("--upstream-soap", metavar="PATH", help="a local copy of nikhilvyas/SOAP's soap.py")
    parser.add_argument("--only", nargs="+", metavar="PREFIX", help="run only the rows starting with these")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    hidden, other = transformer_shapes()
    upstream_soap = load_upstream_soap(args.upstream_soap) if args.upstream_soap else None
    makers = contenders(hidden, hidden + other, args.device, upstream_soap)
    if args.only:
        makers = {name: make for name, make in makers.items() if name.startswith(tuple(args.only))}
    times: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(args.repeats):
        for name, make in makers.items():
            if name.startswith("SOAP"):
                steps = args.soap_steps
            elif name.startswith(("Muon", "PolarGrad")):
                steps = args.matrix_steps
            else:
                steps = args.steps
            times[name].append(time_steps(make(), steps, args.device))

    n_all = sum(torch.Size(s).numel() for s in hidden + other)
    n_hidden = sum(torch.Size(s).numel() for s in hidden)
    print(f"device {args.device}, torch {torch.__version__}, threads {args.threads}, {args.repeats} repeats "
          f"x {args.steps} steps ({args.matrix_steps} for matrix optimizers, {args.soap_steps} for SOAP); "
          f"params: all {n_all:,}, hidden 2-D {n_hidden:,}")
    print("\n| optimizer | ms / step (median) | min | max |\n|---|---:|---:|---:|")
    for name, ts in times.items():
        print(f"| {name} | {1e3 * statistics.median(ts):.2f} | {1e3 * min(ts):.2f} | {1e3 * max(ts):.2f} |")
    print("\n| ratio | value |\n|---|---:|")
    for ours, theirs in RATIOS:
        if ours not in times or theirs not in times:
            continue
        ratio = statistics.median(times[ours]) / statistics.median(times[theirs])
        print(f"| {ours} / {theirs} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
