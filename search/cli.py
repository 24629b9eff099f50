"""`optsearch`: the command line of the optimizer-discovery engine."""

from __future__ import annotations

import argparse
import sys


def _list_primitives(args: argparse.Namespace) -> int:
    from primitives import PRIMITIVE_SETS

    primitive_set = PRIMITIVE_SETS[args.set]
    print(f"primitive set {primitive_set.name!r} ({len(primitive_set)} primitives, version {primitive_set.version})")
    for category in dict.fromkeys(p.category for p in primitive_set):
        print(f"\n{category}")
        for p in primitive_set:
            if p.category == category:
                print(f"  {p.signature}  [cost {p.cost:g}]\n      {p.doc}")
    return 0


def _list_tasks(args: argparse.Namespace) -> int:
    from proxy_tasks.registry import TASKS

    for task in TASKS.values():
        role = "held out" if task.held_out else f"tier {task.tier}"
        batch = "full batch" if task.batch_size is None else f"batch {task.batch_size}"
        print(f"  {task.name:<20} {role:<9} {task.steps:>4} steps, {batch:<10} {task.metric} loss  {task.description}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from search import bench

    rows = bench.bench(args.optimizers, args.tasks, args.seeds, args.device,
                       Path(args.baseline_cache) if args.baseline_cache else None)
    print(bench.format_table(rows))
    for path in bench.write_outputs(rows, Path(args.out)):
        print(f"wrote {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from search import demo

    return demo.main()


def build_parser() -> argparse.ArgumentParser:
    from primitives import PRIMITIVE_SETS

    parser = argparse.ArgumentParser(
        prog="optsearch",
        description="Discover optimizers by program search: evolve update rules from primitives, "
        "score them on proxy tasks, export them as torch optimizers.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    listing = commands.add_parser("list-primitives", help="print the primitive set with signatures and costs")
    listing.add_argument("--set", default="all", choices=sorted(PRIMITIVE_SETS), help="which primitive set")
    listing.set_defaults(handler=_list_primitives)

    tasks = commands.add_parser("list-tasks", help="print the proxy-task suite")
    tasks.set_defaults(handler=_list_tasks)

    bench = commands.add_parser("bench", help="tune and score optimizers on proxy tasks against tuned AdamW")
    bench.add_argument("optimizers", nargs="+", metavar="OPTIMIZER",
                       help="AdamW, SGD:momentum=0.9, Lion, Muon, PolarGrad, program:NAME, or a program file")
    bench.add_argument("--tasks", default="all", help="all, held-out, tier0..tier3, or comma-separated names")
    bench.add_argument("--seeds", type=int, default=3)
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--out", default="bench_out", help="folder for bench.csv, bench.json and curves.png")
    bench.add_argument("--baseline-cache", default=None, help="baseline cache file (default ~/.cache/optsearch)")
    bench.set_defaults(handler=_bench)

    demo = commands.add_parser("demo", help="train a small matrix problem with AdamW, Lion, Muon and PolarGrad")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:  # `optsearch ... | head`
        sys.stderr.close()
        return 0
    except Exception as exc:
        if not isinstance(exc, _user_errors()):
            raise
        print(f"optsearch {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors caused by what the user asked for: a message, not a traceback."""
    from primitives.program import ProgramError
    from proxy_tasks.optimizers import UnknownOptimizerError
    from proxy_tasks.registry import UnknownTaskError

    return (ProgramError, UnknownOptimizerError, UnknownTaskError)


if __name__ == "__main__":
    sys.exit(main())
