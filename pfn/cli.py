"""The ``pfn`` subcommands of ``curvepfn``: ``pretrain`` and ``predict``.

``curvepfn pretrain --config small --out runs/small`` trains a PFN on its prior and exports
``runs/small/model.{pt,json}`` (see :func:`pfn.train.pretrain`).

``curvepfn predict --curves runs.csv`` predicts the final value of every run in a CSV file with one
row per observation and the columns

* ``run``: the run's name (any text);
* ``step``: the step of the observation, > 0 (epoch, optimiser step, ...);
* ``value``: the metric there (``nan`` / ``inf`` mark diverged points);
* any further columns: numeric hyperparameters, constant within a run. Each is min-max
  normalised to [0, 1] across the runs (a column with a single value becomes 0.5); for log-scale
  hyperparameters write their logarithm.

It prints one line per run with the predicted value at ``--max-step`` (the median) and a 90%
interval, in the metric's units, and with ``--plot`` draws the observed curves and their predicted
median and 90% band up to ``--max-step``.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from pfn.surrogate import DEFAULT_SINGLE_WEIGHT, FinalPrediction, RawRun, Surrogate

_REQUIRED = ("run", "step", "value")
# pfn.train.TRAIN_CONFIGS, spelled out so that the CLI starts without importing Lightning.
_TRAIN_CONFIGS = ("tiny", "cpu", "small", "base")
_PLOT_STEPS = 50  # predicted steps per curve in the plot


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pretrain`` and ``predict`` subcommands to ``curvepfn``'s subparsers."""
    pre = subparsers.add_parser("pretrain", help="pretrain a PFN on its prior")
    pre.add_argument(
        "--config",
        choices=_TRAIN_CONFIGS,
        default="small",
        help="named training config (default: small)",
    )
    pre.add_argument("--max-steps", type=int, default=None, help="override the optimiser steps")
    pre.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="end this call after that many steps in total (resumable chunks; the schedule still "
        "spans --max-steps)",
    )
    pre.add_argument(
        "--data", default=None, help="train on a `curvepfn prior sample` HDF5 file, not the prior"
    )
    pre.add_argument(
        "--init-from",
        default=None,
        help="start from this checkpoint's weights and borders (continued training; the model "
        "config must match, or lack only the last-value head, which is then added), "
        "e.g. checkpoints/default",
    )
    pre.add_argument("--lr", type=float, default=None, help="override the peak learning rate")
    pre.add_argument(
        "--batch-size", type=int, default=None, help="override the tasks per step (and device)"
    )
    pre.add_argument(
        "--time-budget",
        type=_duration,
        default=None,
        metavar="TIME",
        help="fit the run to this wall time (e.g. 600, 90s, 8m, 2h): a few steps are timed, "
        "then --max-steps becomes the steps that fit (at most --max-steps, when given)",
    )
    pre.add_argument("--devices", type=int, default=1, help="devices to train on (DDP if > 1)")
    pre.add_argument("--out", default=None, help="output folder (default: runs/pretrain-CONFIG)")
    pre.add_argument("--seed", type=int, default=None, help="override the config's seed")
    pre.add_argument(
        "--no-resume",
        action="store_true",
        help="start afresh even if OUT holds a resumable checkpoint",
    )
    pre.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto")
    pre.set_defaults(func=_pretrain)

    pred = subparsers.add_parser("predict", help="predict the final values of runs in a CSV")
    pred.add_argument(
        "--curves",
        required=True,
        help="CSV with columns run, step, value and optional hyperparameters",
    )
    pred.add_argument(
        "--checkpoint", default=None, help="checkpoint NAME(.pt/.json) (default: the shipped one)"
    )
    pred.add_argument(
        "--max-step",
        type=float,
        default=None,
        help="the step to predict (default: the largest step in the file)",
    )
    pred.add_argument("--lower-is-better", action="store_true", help="the metric is a loss")
    pred.add_argument("--lower-bound", type=float, default=None, help="known metric minimum")
    pred.add_argument("--upper-bound", type=float, default=None, help="known metric maximum")
    pred.add_argument("--plot", default=None, help="write a PNG of the curves and predictions")
    _add_single_weight(pred)
    pred.set_defaults(func=_predict)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as err:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return _distinct(values, text)


def name_list(text: str) -> tuple[str, ...]:
    """argparse type: ``"a, b,c"`` -> ``("a", "b", "c")`` (empty items dropped; at least one
    name, each once: a repeated table or method would count its runs twice)."""
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return _distinct(names, text)


def _distinct(values: tuple, text: str) -> tuple:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{', '.join(repeated)} given twice in {text!r}")
    return values


def add_out_dir(parser: argparse.ArgumentParser, default: str) -> None:
    """``--out`` (a results folder) and ``--overwrite`` (replace a result already there)."""
    parser.add_argument(
        "--out", default=default, help="folder for results.{json,md} and plots (default: "
        "%(default)s; refused if it already holds a result, unless --overwrite)",
    )  # fmt: skip
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a result already in --out"
    )


def check_out_dir(out: str | Path, *, overwrite: bool) -> None:
    """Refuse, before any work, to write over a result in ``out`` (unless ``overwrite``).

    Raises:
        ValueError: ``out/results.json`` exists and ``overwrite`` is False.
    """
    if (Path(out) / "results.json").exists() and not overwrite:
        raise ValueError(
            f"{out} already holds a result (results.json); choose another --out, or pass "
            "--overwrite to replace it"
        )


def register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    """Add ``surrogate`` and ``prior`` to the subparsers of ``curvepfn evaluate``."""
    from pfn.evaluate import METHODS

    sur = subparsers.add_parser(
        "surrogate", help="score the surrogate and baselines on recorded curves (HDF5)"
    )
    sur.add_argument("--data", required=True, help="curve file in the shared HDF5 layout")
    sur.add_argument("--tasks", type=name_list, default=None, help="comma-separated table names")
    sur.add_argument(
        "--context-sizes",
        type=_int_list,
        default=(400, 800, 1000, 1400, 1800),
        help="context points per task (default 400,800,1000,1400,1800)",
    )
    sur.add_argument("--seeds", type=int, default=5, help="tasks per table and context size")
    sur.add_argument(
        "--methods",
        type=name_list,
        default=METHODS,
        help=f"comma-separated, from {','.join(METHODS)} (default: all)",
    )
    sur.add_argument("--checkpoint", default=None, help="surrogate checkpoint (default: shipped)")
    sur.add_argument(
        "--time",
        choices=("step", "index"),
        default="step",
        help="steps -> times: step/max_step (default) or position in the grid",
    )
    sur.add_argument(
        "--scaling",
        choices=("bounds", "data"),
        default="bounds",
        help="score range from the metric's bounds (default) or from the context's values",
    )
    _add_single_weight(sur)
    add_out_dir(sur, "eval_out")
    sur.set_defaults(func=_evaluate_surrogate)

    pri = subparsers.add_parser("prior", help="log-likelihood on held-out prior tasks")
    pri.add_argument("--prior", default="ftpfn", help="prior name (ftpfn, lcpfn, mixture)")
    pri.add_argument("--tasks", type=int, default=256, help="held-out tasks")
    pri.add_argument("--checkpoint", default=None, help="surrogate checkpoint (default: shipped)")
    _add_single_weight(pri)
    pri.set_defaults(func=_evaluate_prior)


def _add_single_weight(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--single-weight",
        type=float,
        default=DEFAULT_SINGLE_WEIGHT,
        help="weight of the single-curve view in the surrogate's predictive, in [0, 1] "
        f"(default {DEFAULT_SINGLE_WEIGHT}; 0: the network's context view alone)",
    )


def _evaluate_surrogate(args: argparse.Namespace) -> int:
    from pfn.evaluate import (
        PFN_MODES,
        SurrogateEvalConfig,
        evaluate_surrogate,
        markdown_table,
        write_report,
    )

    config = SurrogateEvalConfig(
        context_sizes=args.context_sizes,
        seeds=args.seeds,
        methods=args.methods,
        time_mode=args.time,
        scaling=args.scaling,
    )
    needs_pfn = any(m in PFN_MODES for m in config.methods)
    surrogate = (
        Surrogate.load(args.checkpoint, single_weight=args.single_weight) if needs_pfn else None
    )
    check_out_dir(args.out, overwrite=args.overwrite)
    result = evaluate_surrogate(
        args.data,
        surrogate=surrogate,
        config=config,
        tables=args.tasks,
        checkpoint_name=args.checkpoint or "default (shipped)",
    )
    paths = write_report(result, args.out, surrogate=surrogate)
    print(markdown_table(result))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _evaluate_prior(args: argparse.Namespace) -> int:
    from pfn.evaluate import evaluate_prior

    surrogate = Surrogate.load(args.checkpoint, single_weight=args.single_weight)
    result = evaluate_prior(surrogate, prior=args.prior, n_tasks=args.tasks)
    print(
        f"held-out {result.prior} prior, {result.n_tasks} tasks, single_weight "
        f"{result.single_weight:g}: log-likelihood by context share"
    )
    for frac, ll in result.ll.items():
        print(f"  {frac:>4.0%}: {ll:.3f} ± {result.ll_se[frac]:.3f}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from pfn import train  # Lightning is slow to import; only this command needs it

    config = train.train_config(args.config)
    if args.max_steps is not None:
        config = replace(config, max_steps=args.max_steps)
    elif args.time_budget is not None:  # the budget alone sets the length
        config = replace(config, max_steps=_UNCAPPED_STEPS)
    if args.batch_size is not None:
        config = replace(config, batch_size=args.batch_size)
    if args.seed is not None:
        config = replace(config, seed=args.seed)
    if args.data is not None:
        config = replace(config, data=args.data)
    if args.init_from is not None:
        config = replace(config, init_from=args.init_from)
    if args.lr is not None:
        config = replace(config, optim=replace(config.optim, lr=args.lr))
    out = Path(args.out or f"runs/pretrain-{args.config}")
    result = train.pretrain(
        config,
        out,
        devices=args.devices,
        accelerator=args.accelerator,
        resume=not args.no_resume,
        stop_at=args.stop_at,
        time_budget_s=args.time_budget,
    )
    if result.time_plan is not None:  # printed at the start too, under the progress bar
        print(result.time_plan.describe())
    if result.stopped_at_deadline:
        print(
            f"stopped at the time budget after {result.steps} of {result.max_steps} steps: they "
            "ran slower than timed (another job on the machine?), so the learning rate had not "
            "reached the end of its schedule"
        )
    print(
        f"checkpoint: {result.checkpoint} (+ {result.checkpoint.with_suffix('.json').name}), "
        f"{result.steps} steps, {result.wall_time_s:.0f} s"
    )
    for frac, ll in sorted(result.val_ll.items()):
        print(f"  validation log-likelihood at {frac} context: {ll:.3f}")
    return 0


# --time-budget without --max-steps: no cap besides the budget's plan.
_UNCAPPED_STEPS = 10**9


def _duration(text: str) -> float:
    """Seconds from ``600``, ``90s``, ``8m``, ``2h`` or ``1.5h`` (argparse type)."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    value = text.strip().lower()
    scale = units.get(value[-1:], None)
    try:
        seconds = float(value[:-1] if scale else value) * (scale or 1.0)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(
            f"expected a positive time such as 600, 90s, 8m or 2h, got {text!r}"
        )
    return seconds


def read_runs(path: str | Path) -> tuple[dict[str, RawRun], list[str]]:
    """Read a runs CSV (format in the module docstring).

    Returns:
        The runs by name in order of first appearance (observations sorted by step, configs
        min-max normalised across runs, or None without hyperparameter columns), and the
        hyperparameter column names.

    Raises:
        ValueError: a required column is missing, a value is not numeric, a hyperparameter
            varies within a run, or the file has no rows.
    """
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: Excel's byte-order mark
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or []) if h.strip()]  # "a,b,": 2 columns
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; expected run, step, value "
                f"(+ hyperparameter columns), found {', '.join(header) or 'nothing'}"
            )
        hps = [h for h in header if h not in _REQUIRED]
        obs: dict[str, list[tuple[float, float]]] = {}
        configs: dict[str, list[float]] = {}
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            name = row["run"]
            step = _number(row["step"], "step", path, line)
            value = _number(row["value"], "value", path, line)
            config = [_number(row[h], h, path, line) for h in hps]
            if not math.isfinite(step):
                raise ValueError(f"{path}, line {line}: step {row['step']!r} is not finite")
            if any(not math.isfinite(x) for x in config):
                raise ValueError(f"{path}, line {line}: hyperparameters must be finite")
            if name in configs and configs[name] != config:
                raise ValueError(
                    f"{path}, line {line}: run {name!r} changes its hyperparameters; they must be "
                    "constant within a run"
                )
            configs.setdefault(name, config)
            obs.setdefault(name, []).append((step, value))
    if not obs:
        raise ValueError(f"{path}: no observations")
    names = list(obs)
    cfg = np.array([configs[n] for n in names], dtype=np.float64).reshape(len(names), len(hps))
    lo, hi = cfg.min(axis=0), cfg.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    normalised = np.where(hi > lo, (cfg - lo) / span, 0.5)  # (runs, D)
    runs = {}
    for i, name in enumerate(names):
        points = sorted(obs[name])
        runs[name] = RawRun(
            steps=[s for s, _ in points],
            values=[v for _, v in points],
            config=normalised[i] if hps else None,
        )
    return runs, hps


def _number(text: str, column: str, path: str | Path, line: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"{path}, line {line}: column {column!r} holds {text!r}, not a number"
        ) from None


def _predict(args: argparse.Namespace) -> int:
    # A missing file is bad input too: one line from curvepfn, not a traceback.
    try:
        runs, _ = read_runs(args.curves)
        surrogate = Surrogate.load(args.checkpoint, single_weight=args.single_weight)
    except OSError as err:
        raise ValueError(str(err)) from err
    max_step = args.max_step
    if max_step is None:
        max_step = max(float(np.max(r.steps)) for r in runs.values())
    steps = np.linspace(max_step / _PLOT_STEPS, max_step, _PLOT_STEPS) if args.plot else None
    preds = surrogate.predict_final(
        runs,
        max_step=max_step,
        higher_is_better=not args.lower_is_better,
        lower_bound=args.lower_bound,
        upper_bound=args.upper_bound,
        interval=0.9,
        steps=steps,
    )
    print(format_table(runs, preds, max_step))
    if args.plot:
        plot_predictions(runs, preds, args.plot)
        print(f"plot: {args.plot}")
    return 0


def format_table(runs: dict[str, RawRun], preds: list[FinalPrediction], max_step: float) -> str:
    """The printed table: one line per run with its last observation and the prediction."""
    width = max(3, *(len(str(p.run)) for p in preds))
    lines = [
        f"{'run':<{width}}  {'last step':>10}  {'last value':>11}  "
        f"{f'final @ {max_step:g}':>14}  90% interval"
    ]
    for p in preds:
        run = runs[p.run]
        steps, values = np.asarray(run.steps, float), np.asarray(run.values, float)
        last_step = f"{steps[-1]:g}" if steps.size else "-"
        last_value = f"{values[-1]:.4g}" if values.size else "-"
        lines.append(
            f"{p.run!s:<{width}}  {last_step:>10}  {last_value:>11}  {p.final:>14.4g}  "
            f"[{p.lower:.4g}, {p.upper:.4g}]"
        )
    return "\n".join(lines)


def plot_predictions(
    runs: dict[str, RawRun], preds: list[FinalPrediction], path: str | Path
) -> None:
    """Write a PNG: each run's observations, and from its last observed step on its predicted
    median (dashed) and 90% band, in the metric's units."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = _y_range(runs, preds)
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, p in enumerate(preds):
        color = colors[i % len(colors)]
        run = runs[p.run]
        steps, values = np.asarray(run.steps, float), np.asarray(run.values, float)
        ax.plot(steps, values, "o-", color=color, ms=3, label=str(p.run))
        ahead = p.steps >= (steps[-1] if steps.size else 0.0)
        ax.plot(p.steps[ahead], p.median_path[ahead], "--", color=color)
        lower = np.clip(p.lower_path[ahead], lo, hi)
        upper = np.clip(p.upper_path[ahead], lo, hi)
        ax.fill_between(p.steps[ahead], lower, upper, color=color, alpha=0.2, lw=0)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.set_title("observed curves, predicted median (dashed) and 90% band")
    if len(preds) <= 12:
        ax.legend(fontsize="small")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _y_range(runs: dict[str, RawRun], preds: list[FinalPrediction]) -> tuple[float, float]:
    """The plotted value range: the scaler's reference range, the predicted medians and the
    observations near them; diverged values (say a loss of 1e30) and infinite band edges of an
    unbounded metric fall outside and are cut off."""
    scaler = preds[0].scaler
    ref_lo, ref_hi = sorted((scaler.worst, scaler.best))
    span = ref_hi - ref_lo
    medians = np.concatenate([p.median_path for p in preds])
    observed = np.concatenate([np.asarray(r.values, float) for r in runs.values()])
    near = observed[(observed >= ref_lo - span) & (observed <= ref_hi + span)]
    shown = np.concatenate([[ref_lo, ref_hi], medians[np.isfinite(medians)], near])
    lo, hi = float(shown.min()), float(shown.max())
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad
