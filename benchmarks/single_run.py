"""``Surrogate.predict_final`` on single real runs: how often the interval holds the final value.

A user with one partial run asks where it ends. For each table of each file, up to ``--runs``
curves with a recorded final value are drawn; each is cut after a random 10–50% of its recorded
steps and given **alone** to ``predict_final`` (with the table's metric direction and bounds, in
the metric's units). Printed per file: the share of final values inside the 90% interval, the
median absolute error of the predicted final value, and the median interval width, the last two
also relative to how far the run moved over its observed prefix (``|first - last|``), which puts
losses and accuracies on one scale.

Run: ``python benchmarks/single_run.py --data
../shared/data/taskset_dev.h5,../shared/data/lcdb_dev.h5 [--runs 30] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from tqdm import tqdm

from pfn.curve_table import read_curve_tables
from pfn.surrogate import RawRun, Surrogate


def measure(surrogate: Surrogate, path: str, *, runs: int, seed: int) -> dict[str, np.ndarray]:
    """Per run: ``covered`` (bool), ``error`` (absolute, metric units), ``relative_error`` and
    ``relative_width`` (both over the prefix's movement)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {
        "covered": [], "error": [], "relative_error": [], "relative_width": [],
    }  # fmt: skip
    for table in tqdm(read_curve_tables(path), desc=path.rsplit("/", 1)[-1], unit="table"):
        for row in rng.choice(table.n_curves, size=min(runs, table.n_curves), replace=False):
            recorded = np.flatnonzero(np.isfinite(table.curves[row]))
            if recorded.size < 4 or recorded[-1] != table.n_steps - 1:
                continue  # too short, or no final value to check
            cols = recorded[: max(2, int(recorded.size * rng.uniform(0.1, 0.5)))]
            values = table.curves[row, cols]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                (pred,) = surrogate.predict_final(
                    [RawRun(steps=table.steps[cols], values=values)],
                    max_step=float(table.steps[-1]),
                    higher_is_better=table.higher_is_better,
                    lower_bound=table.lower_bound,
                    upper_bound=table.upper_bound,
                )
            truth = table.curves[row, -1]
            moved = abs(values[0] - values[-1]) + 1e-12
            out["covered"].append(pred.lower <= truth <= pred.upper)
            out["error"].append(abs(pred.final - truth))
            out["relative_error"].append(abs(pred.final - truth) / moved)
            out["relative_width"].append((pred.upper - pred.lower) / moved)
    return {k: np.asarray(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="comma-separated curve files")
    parser.add_argument("--runs", type=int, default=30, help="runs drawn per table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    args = parser.parse_args()
    surrogate = Surrogate.load(args.checkpoint)
    for path in args.data.split(","):
        r = measure(surrogate, path, runs=args.runs, seed=args.seed)
        print(
            f"{path}: {r['covered'].size} single runs; 90% interval covers "
            f"{r['covered'].mean():.3f}; median |error| {np.median(r['error']):.4g} "
            f"({np.median(r['relative_error']):.3f} of the prefix's movement); median width "
            f"{np.median(r['relative_width']):.2f} of it"
        )


if __name__ == "__main__":
    main()
