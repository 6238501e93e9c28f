"""The ``curvepfn`` command line: one subcommand family per package, assembled here.

Each package owns its subcommands in its own ``cli.py`` (``register(subparsers)``); this module
is the entry point because ``bo`` sits at the top of the import chain ``priors -> pfn -> bo``.
"""

from __future__ import annotations

import argparse
import sys

from pfn import cli as pfn_cli
from priors import cli as priors_cli


def build_parser() -> argparse.ArgumentParser:
    """The full ``curvepfn`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="curvepfn",
        description="Learning-curve prediction with PFNs and freeze-thaw HPO.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    priors_cli.register(sub)
    pfn_cli.register(sub)
    evaluate = sub.add_parser("evaluate", help="offline evaluation on recorded curves")
    pfn_cli.register_evaluate(evaluate.add_subparsers(dest="what", required=True))
    demo = sub.add_parser("demo", help="run the demo on the embedded defaults")
    demo.add_argument("--out", default="demo_out", help="folder for the demo's plots")
    demo.add_argument("--checkpoint", default=None, help="surrogate checkpoint (default: shipped)")
    demo.set_defaults(func=_demo)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from bo.demo import run_demo

    run_demo(args.out, checkpoint=args.checkpoint)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``curvepfn`` with ``argv`` (default: the process arguments); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # Bad user input or a missing file: one clear line, not a traceback.
        print(f"curvepfn: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
