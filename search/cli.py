"""`optsearch`: the command line of the optimizer-discovery engine.

Nothing heavy is imported before a command runs: `optsearch --help` and
`--version` answer without torch (importing `primitives` imports it), so
handlers import what they need, and so does main() once the arguments parse.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path


def _list_primitives(args: argparse.Namespace) -> int:
    from primitives import PRIMITIVE_SETS

    if args.set not in PRIMITIVE_SETS:
        raise command_error(f"unknown primitive set {args.set!r}; built-in: {', '.join(sorted(PRIMITIVE_SETS))}")
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


@functools.cache
def _command_error_class() -> type:
    from primitives.errors import OptsearchError

    class CommandError(OptsearchError):
        """A command-line argument that cannot be used."""

    return CommandError


def command_error(message: str) -> Exception:
    """The error of a command-line argument that cannot be used (an OptsearchError: exit 2, one line).

    Its class is made on first use: OptsearchError's package imports torch.
    """
    return _command_error_class()(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number (1-65535), got {value}")
    return value


def _device(text: str) -> str:
    """A device this machine has: cpu, cuda or cuda:N (checked before anything trains)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise command_error(f"unknown device {text!r}: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise command_error(f"device {text!r} is not supported: use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise command_error(f"device {text!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise command_error(f"device {text!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return text


def _output_folder(path: str, force: bool) -> Path:
    """A folder to write results into: never a file, and not one that holds files unless --force."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise command_error(f"--out {folder} is a file, not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise command_error(f"--out {folder} is not empty; pass --force to overwrite what is there")
    return folder


def _bench(args: argparse.Namespace) -> int:
    from proxy_tasks import bench

    out = _output_folder(args.out, args.force)
    rows = bench.bench(args.optimizers, args.tasks, args.seeds, _device(args.device),
                       Path(args.baseline_cache) if args.baseline_cache else None)
    print(bench.format_table(rows))
    for path in bench.write_outputs(rows, out):
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


def _observers(config, log_every: int = 10) -> list:
    """What watches a search from the command line: the live display and, unless disabled, MLflow."""
    from search.display import Display
    from search.tracking import make_tracker

    tracker = make_tracker(config)
    return [Display(log_every=log_every)] + ([tracker] if tracker is not None else [])


def _run(args: argparse.Namespace, overrides: list[str]) -> int:
    from search import engine

    config = _search_config(args, overrides)
    if args.dry_run:
        print(json.dumps(config.to_dict(), indent=1))
        return 0
    run_dir = args.run_dir
    if run_dir is None and not config.persistence.run_id:
        run_dir = Path(config.persistence.run_dir) / new_run_id(config)
    result = engine.run(config, run_dir=run_dir, observers=_observers(config, args.log_every))
    return 0 if result.stopped_by != "interrupted" else 130


def new_run_id(config) -> str:
    """<preset>-<UTC time>-<6 hex digits>: two searches started in one folder in the same second get two ids."""
    from search import engine

    return engine.default_run_id(config)


def _resume(args: argparse.Namespace, overrides: list[str]) -> int:
    from search import engine, replay

    flags = [f"stop.max_evals={args.max_evals}"] if args.max_evals is not None else []
    if args.primitive_set is not None:  # the user names the plugin: only then is it imported (replay.load)
        from search.run_store import RunStore

        _, saved = replay.read_config(RunStore(args.run_dir))
        if saved.evolution.primitive_set != args.primitive_set:
            raise command_error(f"the run used primitive set {saved.evolution.primitive_set!r}, "
                               f"not {args.primitive_set!r}")
        flags.append(f"evolution.primitive_set={args.primitive_set}")
    if args.dry_run:  # check the run directory as resume would, change nothing
        recorded = replay.load(args.run_dir, flags + overrides)
        c = recorded.state.counters
        print(f"run {recorded.run_id}: {c.evaluated} of {recorded.config.stop.max_evals} candidates evaluated, "
              f"{recorded.state.seq} events; it can be resumed")
        return 0
    result = engine.resume(args.run_dir, flags + overrides,
                           observers_for=lambda config: _observers(config, args.log_every))
    return 0 if result.stopped_by != "interrupted" else 130


def _ui(args: argparse.Namespace) -> int:
    """The MLflow UI on the store, opened on the candidates of a search; nothing it starts outlives it."""
    from search import tracking, ui_process

    uri = tracking.tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):  # a running server: only the address to open
        url = tracking.view_url(uri, tracking.ui_view(uri, args.experiment))
        print(f"MLflow server {uri}: {url}")
        tracking.open_browser(url, args.no_browser)
        return 0
    try:
        ui_process.check_port(args.host, args.port)  # refused now, not after MLflow's minute of retries
    except ui_process.UiError as exc:
        raise command_error(str(exc)) from None
    url = tracking.view_url(f"http://{_url_host(args.host)}:{args.port}", tracking.ui_view(uri, args.experiment))
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
               "--port", str(args.port), "--workers", "1"]
    print(f"MLflow UI for {uri}: starting on {url}  (Ctrl-C stops it)", flush=True)

    def ready() -> None:
        print(f"ready: {url}", flush=True)
        tracking.open_browser(url, args.no_browser)

    try:
        return ui_process.serve(command, args.host, args.port, on_ready=ready)
    except ui_process.UiError as exc:
        raise command_error(str(exc)) from None


def _url_host(host: str) -> str:
    """Where a browser reaches a server listening on `host`."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _leaderboard(args: argparse.Namespace) -> int:
    from search import report
    from search.tracking import leaderboard, tracking_uri

    rows = leaderboard(args.tracking_uri, args.experiment, args.top)
    if not rows and args.format == "table":
        print(f"no candidate scored on the full suite in {tracking_uri(args.tracking_uri)}")
        return 0
    print(report.render("leaderboard", rows, args.format))
    return 0


def _simplify(args: argparse.Namespace) -> int:
    from primitives.serialize import load
    from search.jobs import resolve_primitive_set
    from primitives.simplify import simplify

    primitive_set = resolve_primitive_set(args.primitive_set)
    program = load(args.program, primitive_set)
    result = simplify(program, primitive_set)
    print("raw:\n" + result.raw.text())
    print("\npruned (loop-aware dead code removed):\n" + result.pruned.text())
    if args.ablate:
        from primitives.ablation import ablate

        ablation = ablate(result.pruned, _ablation_scorer(args, primitive_set), primitive_set, args.tolerance)
        print(f"\nablated ({ablation.evaluations} evaluations on {args.ablate_tasks}; score "
              f"{ablation.original_score:+.3f} -> {ablation.score:+.3f}; removed {len(ablation.removed)}):")
        print("\n".join(f"  - {text}" for text in ablation.removed) or "  (nothing could go)")
        result = simplify(ablation.program, primitive_set)
        print(ablation.program.text())
    print(f"\nsimplified ({result.note}):\n" + result.simplified.text())
    print("\nupdate rule:\n" + result.text)
    print("\nLaTeX:\n" + result.latex)
    return 0


def _ablation_scorer(args: argparse.Namespace, primitive_set):
    """Ablation's judge: the program's mean score on --ablate-tasks, against the cached tuned AdamW."""
    from proxy_tasks.registry import select_tasks
    from proxy_tasks.scoring import BaselineCache, default_cache_path, program_scorer

    seeds = tuple(range(args.ablate_seeds))
    cache = BaselineCache(args.baseline_cache or default_cache_path())
    return program_scorer(select_tasks(args.ablate_tasks), seeds, primitive_set, cache, _device(args.device))


def _export(args: argparse.Namespace) -> int:
    import dataclasses

    from primitives.serialize import load
    from search.export import Provenance, candidate_from_run, export
    from search.jobs import resolve_primitive_set

    if Path(args.source).is_dir():
        if args.candidate is None:
            raise_user_error("exporting from a run directory needs a CANDIDATE_ID")
        program, provenance, primitive_set = candidate_from_run(args.source, args.candidate, args.primitive_set)
    else:
        if args.candidate is not None:
            raise_user_error(f"{args.source} is a program file; CANDIDATE_ID applies to run directories")
        primitive_set = resolve_primitive_set(args.primitive_set or "all")
        program, provenance = load(args.source, primitive_set), Provenance(source_file=Path(args.source).name)
    if args.ablate:
        from primitives.ablation import ablate

        ablation = ablate(program, _ablation_scorer(args, primitive_set), primitive_set, args.tolerance)
        program = ablation.program
        provenance = dataclasses.replace(provenance, ablation=(args.ablate_tasks, len(ablation.removed),
                                                               ablation.original_score, ablation.score))
    result = export(program, args.name, provenance, folder=args.out, force=args.force,
                    simplify_program=not args.no_simplify, primitive_set=primitive_set, register=args.register,
                    standalone=args.standalone, lr=args.lr)
    print(f"wrote {result.path} ({result.note})")
    if args.register:
        print(f"use it: from discovered import {result.name}")
    else:
        print(f"use it: from {result.path.stem} import {result.name}  (with {result.path.parent} on sys.path)")
    return 0


def raise_user_error(message: str):
    raise command_error(message)


def _show(args: argparse.Namespace) -> int:
    from search import report

    if args.candidate is None:
        print(report.render("show", report.summary(args.run_dir, args.primitive_set), args.format))
    else:
        print(report.render("candidate", report.candidate(args.run_dir, args.candidate, args.primitive_set),
                            args.format))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from search import demo

    return demo.main()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("optsearch")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _ablation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ablation (trains the program once per statement)")
    group.add_argument("--ablate", action="store_true",
                       help="drop statements whose removal costs less than --tolerance of score")
    group.add_argument("--ablate-tasks", default="tier0", help="tasks that score the ablation")
    group.add_argument("--ablate-seeds", type=_positive_int, default=2)
    group.add_argument("--tolerance", type=float, default=0.05)
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    group.add_argument("--baseline-cache", default=None, help="baseline cache file (default ~/.cache/optsearch)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optsearch",
        description="Discover optimizers by program search: evolve update rules from primitives, "
        "score them on proxy tasks, export them as torch optimizers.",
    )
    parser.add_argument("--version", action="version", version=f"optsearch {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for add in (_listing_commands, _search_commands, _tracking_commands, _program_commands):
        add(commands)
    return parser


def _listing_commands(commands) -> None:
    listing = commands.add_parser("list-primitives", help="print the primitive set with signatures and costs")
    listing.add_argument("--set", default="all", help="which built-in primitive set (default: all)")
    listing.set_defaults(handler=_list_primitives)

    tasks = commands.add_parser("list-tasks", help="print the proxy-task suite")
    tasks.set_defaults(handler=_list_tasks)

    bench = commands.add_parser("bench", help="tune and score optimizers on proxy tasks against tuned AdamW")
    bench.add_argument("optimizers", nargs="+", metavar="OPTIMIZER",
                       help="AdamW, SGD:momentum=0.9, Lion, Muon, PolarGrad, program:NAME, or a program file")
    bench.add_argument("--tasks", default="all", help="all, held-out, tier0..tier3, or comma-separated names")
    bench.add_argument("--seeds", type=_positive_int, default=3)
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--out", default="bench_out", help="folder for bench.csv, bench.json and curves.png")
    bench.add_argument("--force", action="store_true", help="write into --out even if it holds files")
    bench.add_argument("--baseline-cache", default=None, help="baseline cache file (default ~/.cache/optsearch)")
    bench.set_defaults(handler=_bench)

    demo = commands.add_parser("demo", help="train a small matrix problem with AdamW, Lion, Muon and PolarGrad")
    demo.set_defaults(handler=_demo)


def _search_commands(commands) -> None:
    run = commands.add_parser("run", help="start a search",
                              epilog="Any config value can be set as --section.key=value, e.g. --evolution.population=64.")
    run.add_argument("--preset", default="quickstart", help="smoke, quickstart, lion-space or matrix-space")
    run.add_argument("--config", default=None, help="a TOML file applied on top of the preset")
    run.add_argument("--max-evals", type=int, default=None, help="candidates to evaluate")
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--workers", type=int, default=None, help="worker processes")
    run.add_argument("--run-dir", default=None, help="this run's directory (default runs/<preset>-<time>)")
    run.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    run.add_argument("--dry-run", action="store_true", help="print the resolved configuration and exit")
    run.add_argument("--log-every", type=_positive_int, default=10,
                     help="off a terminal, print a progress line every N evaluations")
    run.set_defaults(handler=_run, takes_overrides=True)

    resume = commands.add_parser("resume", help="continue a search from its run directory")
    resume.add_argument("run_dir", metavar="RUN_DIR")
    resume.add_argument("--max-evals", type=int, default=None, help="raise the budget")
    resume.add_argument("--dry-run", action="store_true", help="check the run directory as resume would, and exit")
    resume.add_argument("--primitive-set", default=None,
                        help="import this plugin primitive set, the one the run used (never done otherwise)")
    resume.add_argument("--log-every", type=_positive_int, default=10,
                        help="off a terminal, print a progress line every N evaluations")
    resume.set_defaults(handler=_resume, takes_overrides=True)

    show = commands.add_parser("show", help="a run's hall of fame and statistics, or one candidate")
    show.add_argument("run_dir", metavar="RUN_DIR")
    show.add_argument("candidate", metavar="CANDIDATE_ID", nargs="?", type=int, default=None,
                      help="one candidate: its scores per task and its program (the ids the live panel shows)")
    show.add_argument("--format", choices=("table", "json", "csv"), default="table",
                      help="table (for reading), json, or csv (the hall of fame; a candidate's tasks)")
    show.add_argument("--primitive-set", default=None,
                      help="import this plugin primitive set to show the run's programs (never done otherwise)")
    show.set_defaults(handler=_show)


def _tracking_commands(commands) -> None:
    ui = commands.add_parser("ui", help="open the MLflow UI on the tracking store, on a search's candidates")
    ui.add_argument("--tracking-uri", default="", help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db")
    ui.add_argument("--experiment", default="", help="the experiment to open (default: that of the latest search)")
    ui.add_argument("--host", default="127.0.0.1", help="the address the server listens on")
    ui.add_argument("--port", type=_port, default=5000)
    ui.add_argument("--no-browser", action="store_true", help="print the address, do not open a browser")
    ui.set_defaults(handler=_ui)

    board = commands.add_parser("leaderboard", help="the best candidates across searches, from MLflow")
    board.add_argument("--tracking-uri", default="", help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db")
    board.add_argument("--experiment", default="", help="one experiment (default: every optsearch-* one)")
    board.add_argument("--top", type=_positive_int, default=10)
    board.add_argument("--format", choices=("table", "json", "csv"), default="table")
    board.set_defaults(handler=_leaderboard)


def _program_commands(commands) -> None:
    simplify = commands.add_parser("simplify", help="print a program raw, pruned and simplified, with LaTeX")
    simplify.add_argument("program", metavar="PROGRAM", help="a program file (.json, or the text form)")
    simplify.add_argument("--primitive-set", default="all")
    _ablation_options(simplify)
    simplify.set_defaults(handler=_simplify)

    export = commands.add_parser("export", help="write a program or a run's candidate as an importable optimizer")
    export.add_argument("source", metavar="RUN_DIR|PROGRAM", help="a run directory, or a program file")
    export.add_argument("candidate", metavar="CANDIDATE_ID", nargs="?", type=int, default=None)
    export.add_argument("--name", required=True, help="the class name, e.g. Cobra (written to cobra.py)")
    export.add_argument("--out", default=None, help="the folder to write into (default: the working directory)")
    export.add_argument("--register", action="store_true",
                        help="write into the installed discovered/ package instead, so `from discovered import NAME` works")
    export.add_argument("--standalone", action="store_true",
                        help="one file that imports only torch (the runtime and primitives copied in)")
    export.add_argument("--force", action="store_true", help="replace an earlier export of that name")
    export.add_argument("--lr", type=float, default=None, help="the default learning rate (default: the tuned one)")
    export.add_argument("--no-simplify", action="store_true", help="export the pruned program as it is")
    export.add_argument("--primitive-set", default=None,
                        help="the primitive set (default: all, or the run's built-in set); naming a plugin "
                             "package.module:NAME imports it")
    _ablation_options(export)
    export.set_defaults(handler=_export)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    bad = [item for item in extra if not (item.startswith("--") and "=" in item)]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (config values are --section.key=value)")
    from primitives.errors import OptsearchError  # after parsing: --help and --version need no torch

    try:
        return args.handler(args, extra) if getattr(args, "takes_overrides", False) else args.handler(args)
    except BrokenPipeError:  # `optsearch ... | head`
        sys.stderr.close()
        return 0
    except OptsearchError as exc:
        print(f"optsearch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only folder, a full disk, a file where a folder should be
        where = f": {exc.filename}" if exc.filename else ""
        print(f"optsearch {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
