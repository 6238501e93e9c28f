"""The ``curvepfn`` command line: one subcommand family per package, assembled here.

Each package owns its subcommands in its own ``cli.py`` (``register(subparsers)``); this module
is the entry point because ``bo`` sits at the top of the import chain ``priors -> pfn -> bo``.
"""

from __future__ import annotations

import argparse
import sys

from bo.acquisition import ACQUISITIONS, DEFAULT_ACQUISITION
from bo.freeze_thaw import SCORE_RANGES, START_VALUES, FreezeThawConfig
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
    evaluate_sub = evaluate.add_subparsers(dest="what", required=True)
    pfn_cli.register_evaluate(evaluate_sub)
    _register_hpo(evaluate_sub)
    demo = sub.add_parser(
        "demo", help="freeze-thaw HPO and curve prediction on an MLP for digits (a few minutes)"
    )
    demo.add_argument("--out", default="demo_out", help="folder for the demo's plots and runs")
    demo.add_argument("--checkpoint", default=None, help="surrogate checkpoint (default: shipped)")
    demo.add_argument("--budget", type=int, default=120, help="epochs of the search (default 120)")
    demo.add_argument("--quick", action="store_true", help="a tiny version (seconds)")
    demo.add_argument("--seed", type=int, default=0, help="seeds split, search, configs")
    demo.set_defaults(func=_demo)
    return parser


def _register_hpo(subparsers: argparse._SubParsersAction) -> None:
    hpo = subparsers.add_parser(
        "hpo", help="simulate HPO on recorded curves (HDF5): normalised regret and rank"
    )
    hpo.add_argument("--data", required=True, help="curve file in the shared HDF5 layout")
    hpo.add_argument(
        "--tasks", type=pfn_cli.name_list, default=None, help="comma-separated table names"
    )
    hpo.add_argument(
        "--optimizers",
        type=pfn_cli.name_list,
        default=("freeze-thaw", "random", "hyperband", "asha"),
        help="comma-separated optimizer names (default: freeze-thaw,random,hyperband,asha)",
    )
    hpo.add_argument("--seeds", type=int, default=10, help="runs per table and optimizer")
    hpo.add_argument("--budget", type=int, default=1000, help="steps per run (default 1000)")
    hpo.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes running (table, seed) jobs side by side, one thread each (default 1)",
    )
    hpo.add_argument(
        "--checkpoint", default=None, help="surrogate of freeze-thaw (default: shipped)"
    )
    hpo.add_argument(
        "--acquisition",
        choices=ACQUISITIONS,
        default=DEFAULT_ACQUISITION,
        help=f"acquisition of freeze-thaw (default: {DEFAULT_ACQUISITION})",
    )
    hpo.add_argument(
        "--score-range",
        choices=SCORE_RANGES,
        default=SCORE_RANGES[0],
        help="freeze-thaw's score map: from the observed values (default) or the metric's bounds",
    )
    hpo.add_argument(
        "--single-weight",
        type=float,
        default=FreezeThawConfig().single_weight,
        help="weight of the surrogate's single-curve view in freeze-thaw's predictive "
        "(default: %(default)s; 0: the context view alone)",
    )
    hpo.add_argument(
        "--candidates",
        type=int,
        default=FreezeThawConfig().n_candidates,
        help="unstarted table rows freeze-thaw scores per decision (default: %(default)s; "
        "FreezeThawConfig.n_candidates)",
    )
    hpo.add_argument(
        "--repeat-configs",
        action="store_true",
        help="let freeze-thaw start a row whose configuration a started run already has like "
        "any other (default: untried ones only, then a repeat only when no paused run can go "
        "on; FreezeThawConfig.repeat_configs)",
    )
    hpo.add_argument(
        "--permutations",
        type=int,
        default=FreezeThawConfig().permutations,
        help="random orders of the hyperparameters freeze-thaw averages per decision "
        "(default: %(default)s; 0: the encoding's order; FreezeThawConfig.permutations)",
    )
    hpo.add_argument(
        "--start-value",
        choices=START_VALUES,
        default=FreezeThawConfig().start_value,
        help="the acquisition value a new run competes with: the pool's best (default) or a "
        "random pool member's (FreezeThawConfig.start_value)",
    )
    pfn_cli.add_out_dir(hpo, "hpo_out")
    hpo.set_defaults(func=_evaluate_hpo)
    compare = subparsers.add_parser(
        "hpo-compare",
        help="paired difference of regret between two `evaluate hpo` results (B - A)",
    )
    compare.add_argument("a", help="result A: a results.json or its folder")
    compare.add_argument("b", help="result B, on the same tables and seeds")
    compare.add_argument(
        "--optimizer", default="freeze-thaw", help="optimizer of A (default freeze-thaw)"
    )
    compare.add_argument("--against", default=None, help="optimizer of B (default: the same)")
    compare.add_argument(
        "--budget",
        type=int,
        default=None,
        help="compare after this many steps (default: the whole budget; needs the results' "
        "curves.npz otherwise)",
    )
    compare.set_defaults(func=_compare_hpo)
    merge = subparsers.add_parser(
        "hpo-merge",
        help="one report of several `evaluate hpo` results on the same tables and seeds, "
        "ranked among all their optimizers",
    )
    merge.add_argument(
        "results",
        nargs="+",
        metavar="RESULT[:OPTIMIZERS]",
        help="a result folder (or its results.json), optionally with the comma-separated "
        "optimizers to take from it, e.g. hpo_new:freeze-thaw hpo_base:random,hyperband,asha; "
        "NAME=LABEL renames one (hpo_pool1:freeze-thaw=ft-pool1), so that two settings of one "
        "optimizer fit in one report",
    )
    pfn_cli.add_out_dir(merge, "hpo_merged")
    merge.set_defaults(func=_merge_hpo)


def _evaluate_hpo(args: argparse.Namespace) -> int:
    from bo.hpo_benchmark import FreezeThawOptimizer, evaluate_hpo
    from bo.hpo_report import markdown_table, write_hpo_report

    if args.checkpoint is not None and "freeze-thaw" in args.optimizers:
        from pfn.surrogate import Surrogate

        Surrogate.load(args.checkpoint)  # fail before any work if it is missing or invalid
    optimizers = [
        FreezeThawOptimizer(
            checkpoint=args.checkpoint,
            acquisition=args.acquisition,
            config=FreezeThawConfig(
                score_range=args.score_range,
                single_weight=args.single_weight,
                n_candidates=args.candidates,
                repeat_configs=args.repeat_configs,
                permutations=args.permutations,
                start_value=args.start_value,
            ),
        )
        if name == "freeze-thaw"
        else name
        for name in args.optimizers
    ]
    pfn_cli.check_out_dir(args.out, overwrite=args.overwrite)
    result = evaluate_hpo(
        args.data,
        optimizers=optimizers,
        seeds=args.seeds,
        budget=args.budget,
        tables=args.tasks,
        workers=args.workers,
    )
    paths = write_hpo_report(result, args.out)
    print(markdown_table(result))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _compare_hpo(args: argparse.Namespace) -> int:
    from bo.hpo_compare import compare_regret

    result = compare_regret(
        args.a, args.b, optimizer_a=args.optimizer, optimizer_b=args.against, budget=args.budget
    )
    print(f"A: {args.optimizer} in {args.a}\nB: {result.optimizer_b} in {args.b}")
    for name, (va, vb) in result.differing_settings.items():
        print(f"  {name}: A {va!r}, B {vb!r}")
    after = "final regret" if args.budget is None else f"regret after {args.budget} steps"
    print(f"{after}, B - A: {result.describe()}")
    return 0


def _merge_hpo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bo.hpo_report import load_result, markdown_table, merge_results, select, write_hpo_report

    parts = []
    for text in args.results:
        path, names, labels = text, None, None
        if not Path(text).exists() and ":" in text:  # RESULT:OPTIMIZERS, each NAME or NAME=LABEL
            path, chosen = text.rsplit(":", 1)
            try:
                items = pfn_cli.name_list(chosen)
            except argparse.ArgumentTypeError as err:
                raise ValueError(f"{text}: {err}") from err
            names = [item.split("=", 1)[0].strip() for item in items]
            labels = [item.split("=", 1)[-1].strip() for item in items]
        result = load_result(path)
        parts.append(result if names is None else select(result, names, labels))
    merged = merge_results(parts)
    pfn_cli.check_out_dir(args.out, overwrite=args.overwrite)
    paths = write_hpo_report(merged, args.out)
    print(markdown_table(merged))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from bo.demo import run_demo

    run_demo(
        args.out, checkpoint=args.checkpoint, budget=args.budget, quick=args.quick, seed=args.seed
    )
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
