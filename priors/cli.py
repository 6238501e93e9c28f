"""``curvepfn prior ...``: sample tasks into an HDF5 store, or plot a few sampled tasks.

curvepfn prior sample --tasks N --out prior.h5 [--prior NAME] [--seed S] [--batch-size B]
                      [--max-hps D] [--device cpu|cuda]
curvepfn prior plot --out curves.png [--prior NAME] [--tasks 4] [--seed S]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from priors.registry import PRIOR_NAMES, make_prior

DEFAULT_PRIOR = "mixture"


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``, with a message naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _add_commands(sub: argparse._SubParsersAction) -> None:
    prior_help = f"which prior ({', '.join(PRIOR_NAMES)}; default {DEFAULT_PRIOR})"
    sample = sub.add_parser("sample", help="sample tasks from a prior into an HDF5 store")
    sample.add_argument("--tasks", type=_positive_int, required=True, help="number of tasks")
    sample.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    sample.add_argument("--prior", choices=PRIOR_NAMES, default=DEFAULT_PRIOR, help=prior_help)
    sample.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")
    sample.add_argument("--batch-size", type=_positive_int, default=64, help="tasks per batch")
    sample.add_argument(
        "--max-hps", type=_non_negative_int, default=None, help="hyperparameter slots D"
    )
    sample.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to sample")
    sample.add_argument(
        "--workers",
        type=_positive_int,
        default=2,
        help="threads sampling parts of each batch (priors.threaded; default 2, 1: plain)",
    )
    sample.set_defaults(func=_sample)

    plot = sub.add_parser("plot", help="plot the curves of a few sampled tasks")
    plot.add_argument("--out", type=Path, required=True, help="image file to write (PNG)")
    plot.add_argument("--prior", choices=PRIOR_NAMES, default=DEFAULT_PRIOR, help=prior_help)
    plot.add_argument("--tasks", type=_positive_int, default=4, help="number of tasks to plot")
    plot.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")
    plot.set_defaults(func=_plot)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``prior`` command and its subcommands to the ``curvepfn`` parser."""
    parser = subparsers.add_parser("prior", help="sample or plot the synthetic-task priors")
    _add_commands(parser.add_subparsers(dest="prior_command", required=True))


def _sample(args: argparse.Namespace) -> int:
    from priors.store import write_tasks

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine")
    overrides = {} if args.max_hps is None else {"max_hps": args.max_hps}
    prior = make_prior(args.prior, **overrides)
    if args.workers > 1:
        from priors.threaded import ThreadedPrior

        prior = ThreadedPrior(prior, args.workers)
    info = write_tasks(
        args.out,
        prior,
        args.tasks,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(f"wrote {info.n_tasks} tasks of prior {info.prior_name!r} to {args.out}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    prior = make_prior(args.prior)
    generator = torch.Generator().manual_seed(args.seed)
    ncols = math.ceil(math.sqrt(args.tasks))
    nrows = math.ceil(args.tasks / ncols)
    fig = Figure(figsize=(4.5 * ncols, 3.5 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    cmap = colormaps["viridis"]
    for k, ax in enumerate(axes.flat):
        if k >= args.tasks:
            ax.set_axis_off()
            continue
        # One batch per task: every panel gets its own context size (and mixture component).
        batch = prior.sample(1, generator=generator)
        d = int(batch.hp_mask[0].sum())
        curve, t, y = batch.curve[0], batch.t[0], batch.y[0]  # (T,)
        is_context = torch.arange(batch.n_tokens) < batch.n_context  # (T,)
        used = sorted(set(curve.tolist()))
        for c in used:
            on = curve == c
            if d > 0:
                # Colour by the first real hyperparameter: similar configurations, similar colour.
                first_hp = int(batch.hp_mask[0].nonzero()[0])
                colour = cmap(float(batch.configs[0, c, first_hp]))
            else:
                # No hyperparameters: colour by the final value (capped: viridis ends pale).
                colour = cmap(0.85 * float(y[on][t[on].argmax()]))
            for part, alpha in ((on & is_context, 1.0), (on & ~is_context, 0.25)):
                order = t[part].argsort()
                ax.plot(t[part][order], y[part][order], ".-", color=colour, alpha=alpha, ms=2, lw=1)
        curves = f"{len(used)} curve" + ("s" if len(used) != 1 else "")
        ax.set_title(f"task {k}: d={d}, {curves}, {batch.n_context} context tokens")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("t (normalised step)")
        ax.set_ylabel("y")
    fig.suptitle(f"prior {args.prior!r}, seed {args.seed} (solid: context, faint: queries)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``curvepfn prior`` with ``argv`` (the words after ``prior``); returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="curvepfn prior", description="Sample or plot the synthetic-task priors."
    )
    _add_commands(parser.add_subparsers(dest="prior_command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as err:
        print(f"curvepfn prior: error: {err}", file=sys.stderr)
        return 2
