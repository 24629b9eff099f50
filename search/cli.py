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


if __name__ == "__main__":
    sys.exit(main())
