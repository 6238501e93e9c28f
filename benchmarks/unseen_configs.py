"""Log-likelihood of configurations not yet started, with and without the single-curve view.

The surrogate's predictive mixes its context view with its single-curve view (``single_weight``,
see :class:`pfn.surrogate.Surrogate`) for curves with observed points. A configuration not yet
started has none: alone, its single-curve view reads an empty curve and gives the prior's spread
over all tasks, so its predictive is the context view alone (since 2026-12-07; before, it was
mixed too). This measures, on real curves, what mixing that spread in with weight ``w`` would
do: ``(1 - w) p_context + w p_empty``, against the context view (``w = 0``, the predictive).

Protocol: for each table of each file and each seed, an evaluation task is drawn as in
``curvepfn evaluate surrogate`` (:func:`pfn.eval_tasks.build_eval_task`, ``--context`` points).
Then up to 100 configurations of the table that are not in the task are each queried at one
random recorded step, with the task's score map. Printed per file: the mean log-likelihood of
those values for each weight (mean ± standard error over tasks), and each weight's paired
difference to weight 0.

Run: ``python benchmarks/unseen_configs.py --data
../shared/data/taskset_dev.h5,../shared/data/lcdb_dev.h5 [--context 400] [--seeds 3]
[--weights 0,0.05,0.1,0.2] [--checkpoint PATH]``.
"""

from __future__ import annotations

import argparse

import numpy as np
from tqdm import tqdm

from pfn.curve_table import read_curve_tables
from pfn.eval_tasks import build_eval_task, unseen_rows
from pfn.forecast import ViewMixture
from pfn.surrogate import Surrogate

N_UNSEEN = 100  # configurations queried per task (fewer if the table has fewer left)


def unseen_log_likelihoods(
    surrogate: Surrogate, path: str, *, n_context: int, seeds: int, weights: list[float]
) -> dict[float, np.ndarray]:
    """Per weight, the (tasks,) mean log-likelihoods of unseen configurations' values in
    ``path``."""
    out: dict[float, list[float]] = {w: [] for w in weights}
    tables = read_curve_tables(path)
    for table in tqdm(tables, desc=path.rsplit("/", 1)[-1], unit="table"):
        times = table.times()
        for seed in range(seeds):
            task = build_eval_task(table, n_context=n_context, seed=seed)
            rng = np.random.default_rng(seed)
            free = unseen_rows(table, task)
            rows = rng.choice(free, size=min(N_UNSEEN, free.size), replace=False)
            cols = rng.integers(0, table.n_steps, size=rows.size)
            raw = table.curves[rows, cols]
            recorded = ~np.isnan(raw)  # NaN: not recorded
            rows, cols, raw = rows[recorded], cols[recorded], raw[recorded]
            if rows.size == 0:
                continue
            configs = np.concatenate([task.configs, table.configs[rows]])
            query = np.arange(task.n_curves, task.n_curves + rows.size)
            context = surrogate.forecast(
                configs, ctx_curve=task.ctx_curve, ctx_t=task.ctx_t, ctx_y=task.ctx_y,
                qry_curve=query, qry_t=times[cols],
            )  # fmt: skip
            empty = surrogate.forecast_single([([], [])] * rows.size, times[cols])
            score = task.scaler.to_score(raw)
            for w in weights:
                views = ViewMixture(context, empty, np.arange(rows.size), w)
                out[w].append(float(views.log_prob(score).mean()))
    return {w: np.asarray(v) for w, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="comma-separated curve files")
    parser.add_argument("--context", type=int, default=400, help="context points per task")
    parser.add_argument("--seeds", type=int, default=3, help="tasks per table")
    parser.add_argument("--weights", default="0,0.05,0.1,0.2", help="single_weight values")
    parser.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    args = parser.parse_args()
    weights = [float(w) for w in args.weights.split(",")]
    if 0.0 not in weights:
        weights.insert(0, 0.0)  # the reference of the paired differences
    surrogate = Surrogate.load(args.checkpoint)
    for path in args.data.split(","):
        ll = unseen_log_likelihoods(
            surrogate, path, n_context=args.context, seeds=args.seeds, weights=weights
        )
        n = ll[0.0].size
        print(f"{path}: {n} tasks of {args.context} context points, mean log-likelihood")
        for w in weights:
            line = f"  w={w:g}: {ll[w].mean():.3f} ± {ll[w].std(ddof=1) / np.sqrt(n):.3f}"
            if w != 0.0:
                d = ll[w] - ll[0.0]
                se = d.std(ddof=1) / np.sqrt(n)
                better = int((d > 0).sum())
                line += f"   vs w=0: {d.mean():+.3f} ± {se:.3f} (higher in {better}/{n})"
            print(line)


if __name__ == "__main__":
    main()
