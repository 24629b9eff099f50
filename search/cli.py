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


def _search_config(args: argparse.Namespace, overrides: list[str]):
    from search import config

    flags = []
    for name, key in (("max_evals", "stop.max_evals"), ("seed", "seed"), ("workers", "workers.workers"),
                      ("tracking_uri", "tracking.uri")):
        if getattr(args, name) is not None:
            flags.append(f"{key}={getattr(args, name)}")
    return config.load(args.preset, args.config, flags + overrides)


def _run(args: argparse.Namespace, overrides: list[str]) -> int:
    from search import engine
    from search.display import Display

    config = _search_config(args, overrides)
    result = engine.run(config, run_dir=args.run_dir, tracker=_tracker(config), display=Display())
    return 0 if result.stopped_by != "interrupted" else 130


def _resume(args: argparse.Namespace, overrides: list[str]) -> int:
    from search import engine
    from search.display import Display

    flags = [f"stop.max_evals={args.max_evals}"] if args.max_evals is not None else []
    result = engine.resume(args.run_dir, flags + overrides, tracker_factory=_tracker, display=Display())
    return 0 if result.stopped_by != "interrupted" else 130


def _tracker(config):
    from search.tracking import make_tracker

    return make_tracker(config)


def _ui(args: argparse.Namespace) -> int:
    import subprocess

    from search.tracking import tracking_uri

    uri = tracking_uri(args.tracking_uri)
    print(f"MLflow UI for {uri} on http://{args.host}:{args.port}")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
               "--port", str(args.port)]
    return subprocess.call(command)


def _leaderboard(args: argparse.Namespace) -> int:
    from search.tracking import leaderboard, tracking_uri

    rows = leaderboard(args.tracking_uri, args.experiment, args.top)
    if not rows:
        print(f"no candidate scored on the full suite in {tracking_uri(args.tracking_uri)}")
        return 0
    for rank, row in enumerate(rows, start=1):
        print(f"{rank:>3}. score {row['score']:+.3f}  {row['search']} #{row['candidate']}  ({row['hash']})")
        print("\n".join("       " + line for line in row["program"].splitlines()[1:]))
    return 0


def _simplify(args: argparse.Namespace) -> int:
    from primitives.serialize import load
    from search.jobs import resolve_primitive_set
    from search.simplify import simplify

    primitive_set = resolve_primitive_set(args.primitive_set)
    program = load(args.program, primitive_set)
    result = simplify(program, primitive_set)
    print("raw:\n" + result.raw.text())
    print("\npruned (loop-aware dead code removed):\n" + result.pruned.text())
    if args.ablate:
        from search.ablation import ablate, proxy_task_scorer

        scorer = proxy_task_scorer(args.ablate_tasks, args.ablate_seeds, primitive_set)
        ablation = ablate(result.pruned, scorer, primitive_set, args.tolerance)
        print(f"\nablated ({ablation.evaluations} evaluations on {args.ablate_tasks}; score "
              f"{ablation.original_score:+.3f} -> {ablation.score:+.3f}; removed {len(ablation.removed)}):")
        print("\n".join(f"  - {text}" for text in ablation.removed) or "  (nothing could go)")
        result = simplify(ablation.program, primitive_set)
        print(ablation.program.text())
    print(f"\nsimplified ({result.note}):\n" + result.simplified.text())
    print("\nupdate rule:\n" + result.text)
    print("\nLaTeX:\n" + result.latex)
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from primitives.serialize import load
    from search.export import candidate_from_run, export
    from search.jobs import resolve_primitive_set

    if Path(args.source).is_dir():
        if args.candidate is None:
            raise_user_error("exporting from a run directory needs a CANDIDATE_ID")
        program, provenance, primitive_set = candidate_from_run(args.source, args.candidate)
    else:
        if args.candidate is not None:
            raise_user_error(f"{args.source} is a program file; CANDIDATE_ID applies to run directories")
        primitive_set = resolve_primitive_set(args.primitive_set)
        program, provenance = load(args.source, primitive_set), {"source": args.source}
    if args.ablate:
        from search.ablation import ablate, proxy_task_scorer

        ablation = ablate(program, proxy_task_scorer(args.ablate_tasks, 2, primitive_set), primitive_set,
                          args.tolerance)
        program = ablation.program
        provenance["ablation"] = (f"removed {len(ablation.removed)} statement(s) on {args.ablate_tasks}, score "
                                  f"{ablation.original_score:+.3f} -> {ablation.score:+.3f}")
    result = export(program, args.name, provenance, folder=args.out, force=args.force,
                    simplify_program=not args.no_simplify, primitive_set=primitive_set)
    print(f"wrote {result.path} ({result.note})")
    if args.out is None:
        print(f"use it: from discovered import {result.name}")
    return 0


def raise_user_error(message: str):
    from search.export import ExportError

    raise ExportError(message)


def _show(args: argparse.Namespace) -> int:
    from search import report

    print(report.summary(args.run_dir))
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

    run = commands.add_parser("run", help="start a search",
                              epilog="Any config value can be set as --section.key=value, e.g. --evolution.population=64.")
    run.add_argument("--preset", default="quickstart", help="smoke, quickstart, lion-space or matrix-space")
    run.add_argument("--config", default=None, help="a TOML file applied on top of the preset")
    run.add_argument("--max-evals", type=int, default=None, help="candidates to evaluate")
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--workers", type=int, default=None, help="worker processes")
    run.add_argument("--run-dir", default=None, help="this run's directory (default runs/<preset>-<time>)")
    run.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    run.set_defaults(handler=_run, takes_overrides=True)

    resume = commands.add_parser("resume", help="continue a search from its run directory")
    resume.add_argument("run_dir", metavar="RUN_DIR")
    resume.add_argument("--max-evals", type=int, default=None, help="raise the budget")
    resume.set_defaults(handler=_resume, takes_overrides=True)

    ui = commands.add_parser("ui", help="open the MLflow UI on the tracking store")
    ui.add_argument("--tracking-uri", default="", help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(handler=_ui)

    board = commands.add_parser("leaderboard", help="the best candidates across searches, from MLflow")
    board.add_argument("--tracking-uri", default="", help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db")
    board.add_argument("--experiment", default="", help="one experiment (default: every optsearch-* one)")
    board.add_argument("--top", type=int, default=10)
    board.set_defaults(handler=_leaderboard)

    simplify = commands.add_parser("simplify", help="print a program raw, pruned and simplified, with LaTeX")
    simplify.add_argument("program", metavar="PROGRAM", help="a program file (.json, or the text form)")
    simplify.add_argument("--primitive-set", default="all")
    simplify.add_argument("--ablate", action="store_true",
                          help="also drop statements whose removal costs less than --tolerance of score "
                               "(trains the program once per statement)")
    simplify.add_argument("--ablate-tasks", default="tier0", help="tasks that score the ablation")
    simplify.add_argument("--ablate-seeds", type=int, default=2)
    simplify.add_argument("--tolerance", type=float, default=0.05)
    simplify.set_defaults(handler=_simplify)

    export = commands.add_parser("export", help="write a program or a run's candidate as an importable optimizer")
    export.add_argument("source", metavar="RUN_DIR|PROGRAM", help="a run directory, or a program file")
    export.add_argument("candidate", metavar="CANDIDATE_ID", nargs="?", type=int, default=None)
    export.add_argument("--name", required=True, help="the class name, e.g. Cobra (written to discovered/cobra.py)")
    export.add_argument("--force", action="store_true", help="replace an earlier export of that name")
    export.add_argument("--out", default=None, help="write the module here instead of into discovered/ (not registered)")
    export.add_argument("--no-simplify", action="store_true", help="export the pruned program as it is")
    export.add_argument("--primitive-set", default="all", help="for program files that use a plugin set")
    export.add_argument("--ablate", action="store_true", help="drop statements that do not earn their keep first")
    export.add_argument("--ablate-tasks", default="tier0")
    export.add_argument("--tolerance", type=float, default=0.05)
    export.set_defaults(handler=_export)

    show = commands.add_parser("show", help="a run's hall of fame and statistics")
    show.add_argument("run_dir", metavar="RUN_DIR")
    show.set_defaults(handler=_show)

    demo = commands.add_parser("demo", help="train a small matrix problem with AdamW, Lion, Muon and PolarGrad")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    bad = [item for item in extra if not (item.startswith("--") and "=" in item)]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (config values are --section.key=value)")
    try:
        return args.handler(args, extra) if getattr(args, "takes_overrides", False) else args.handler(args)
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
    from search.config import ConfigError
    from search.run_store import RunDirError
    from search.export import ExportError
    from search.tracking import TrackingError

    return (ProgramError, UnknownOptimizerError, UnknownTaskError, ConfigError, RunDirError, TrackingError,
            ExportError)


if __name__ == "__main__":
    sys.exit(main())
