"""Does the order of the hyperparameter slots change the forecast of unseen configurations?

The prior is exchangeable over hyperparameter slots and over a categorical's one-hot choices (it
draws them alike), so the Bayes-optimal predictive does not depend on their order. The network
reads the slots through one MLP over all of them, so it need not be. On a table whose rows share
one fixed category order (LCDB's 20 learners), a slot preference becomes a preference for some
learners in every table. This measures it on real curves, and what averaging the predictive over
random orders (:func:`bo.space.random_order`, as ``FreezeThawConfig.permutations`` does) gives.

Protocol: for each table of each file (every ``--stride``-th) and each seed, an evaluation task is
drawn as in ``curvepfn evaluate surrogate`` (``--context`` points). Up to 100 configurations that
no curve of the task has are each queried at the table's last step, with the task's score map,
once in the encoding's order and under ``--orders`` random orders. Printed per file and context
size, mean ± standard error over tasks:

* the mean log-likelihood of those final values, in the encoding's order and under the mixture of
  the random orders (the paired difference);
* the Spearman correlation, within a task, between the predicted mean and the true final value,
  for each predictive: how well the model ranks configurations it has not seen.

Run: ``python benchmarks/hp_orders.py --data
../shared/data/taskset_dev.h5,../shared/data/lcdb_dev.h5 [--context 50,200] [--orders 8]
[--stride 2] [--seeds 3]``.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.special import logsumexp
from scipy.stats import spearmanr
from tqdm import tqdm

from bo.space import random_order
from pfn.curve_table import read_curve_tables
from pfn.eval_tasks import build_eval_task, unseen_rows
from pfn.surrogate import Surrogate

N_UNSEEN = 100  # configurations queried per task (fewer if the table has fewer left)


def measure(
    surrogate: Surrogate, path: str, *, n_context: int, orders: int, stride: int, seeds: int
) -> dict[str, np.ndarray]:
    """Per task: log-likelihoods ``ll_id``, ``ll_avg`` and Spearman correlations ``rho_id``,
    ``rho_avg`` (NaN where the true values are all equal) of the unseen configurations."""
    out: dict[str, list[float]] = {"ll_id": [], "ll_avg": [], "rho_id": [], "rho_avg": []}
    tables = read_curve_tables(path)[::stride]
    for table in tqdm(tables, desc=f"{path.rsplit('/', 1)[-1]} N={n_context}", unit="table"):
        last = table.n_steps - 1
        for seed in range(seeds):
            task = build_eval_task(table, n_context=n_context, seed=seed)
            rng = np.random.default_rng(seed)
            free = unseen_rows(table, task, new_configs=True)
            if free.size == 0:
                continue
            rows = rng.choice(free, size=min(N_UNSEEN, free.size), replace=False)
            raw = table.curves[rows, last]
            rows, raw = rows[~np.isnan(raw)], raw[~np.isnan(raw)]
            if rows.size < 3:
                continue
            score = task.scaler.to_score(raw)
            configs = np.concatenate([task.configs, table.configs[rows]])
            arrays = dict(
                ctx_curve=task.ctx_curve, ctx_t=task.ctx_t, ctx_y=task.ctx_y,
                qry_curve=np.arange(task.n_curves, task.n_curves + rows.size),
                qry_t=np.ones(rows.size), single_weight=0.0,
            )  # fmt: skip
            order_rng = np.random.default_rng([seed, 1])
            fcs = [surrogate.forecast(configs, **arrays)] + [
                surrogate.forecast(configs[:, random_order(table.hp_groups, order_rng)], **arrays)
                for _ in range(orders)
            ]
            lps = np.array([f.log_prob(score) for f in fcs])  # (1 + orders, Q)
            means = np.array([f.mean() for f in fcs])
            out["ll_id"].append(float(lps[0].mean()))
            out["ll_avg"].append(float((logsumexp(lps[1:], axis=0) - np.log(orders)).mean()))
            constant = np.ptp(score) == 0
            for name, m in (("rho_id", means[0]), ("rho_avg", means[1:].mean(axis=0))):
                out[name].append(np.nan if constant else float(spearmanr(m, score)[0]))
    return {k: np.asarray(v) for k, v in out.items()}


def _mean_se(x: np.ndarray, digits: int = 3) -> str:
    x = x[np.isfinite(x)]
    return f"{x.mean():+.{digits}f} ± {x.std(ddof=1) / np.sqrt(x.size):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="comma-separated curve files")
    parser.add_argument("--context", default="50,200", help="context points per task (list)")
    parser.add_argument("--orders", type=int, default=8, help="random orders averaged")
    parser.add_argument("--stride", type=int, default=2, help="every k-th table of a file")
    parser.add_argument("--seeds", type=int, default=3, help="tasks per table")
    parser.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    args = parser.parse_args()
    if args.orders < 1:
        parser.error("--orders must be >= 1")
    surrogate = Surrogate.load(args.checkpoint)
    for path in args.data.split(","):
        for n_context in (int(c) for c in args.context.split(",")):
            r = measure(surrogate, path, n_context=n_context, orders=args.orders,
                        stride=args.stride, seeds=args.seeds)  # fmt: skip
            print(
                f"{path}: {r['ll_id'].size} tasks of {n_context} context points\n"
                f"  log-likelihood: encoding's order {r['ll_id'].mean():.4f}, "
                f"{args.orders} random orders {r['ll_avg'].mean():.4f}, "
                f"paired {_mean_se(r['ll_avg'] - r['ll_id'], 4)}\n"
                f"  Spearman(predicted mean, true final value): encoding's order "
                f"{_mean_se(r['rho_id'])}, {args.orders} random orders {_mean_se(r['rho_avg'])}"
            )


if __name__ == "__main__":
    main()
