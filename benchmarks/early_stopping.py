"""Early stopping with :class:`bo.integrations.optuna.PFNPruner` on recorded curves (LC-PFN's test).

Protocol (``../shared/design/reference.md`` §5, "early stopping with LC-PFN"): on each table of a
curve file, an Optuna study runs ``--trials`` configurations in a random order; each trial reports
its recorded curve step by step, and the pruner may stop it. The same trials run once without
pruning. Printed per table and in total:

* ``speed-up``: steps trained without pruning / steps trained with it;
* ``best (no pruning)`` and ``best (pruned)``: the best final value of the completed trials, in the
  metric's units (a pruned study can only lose here, by pruning the trial that would have won);
* ``wrong``: pruned trials whose recorded final value beat the best completed final value at the
  moment they were pruned (the decisions that would have cost something).

Run: ``python benchmarks/early_stopping.py --data ../shared/data/taskset_dev.h5 [--trials 100]
[--seeds 1] [--threshold 0.05] [--min-steps 3] [--tables A,B] [--callback] [--use-params]``.
Needs optuna (``pip install curvepfn[hpo]``) unless ``--callback``. Diverged (NaN) points of a
recorded curve are reported as the worst value (+inf for a loss), since Optuna's trials report a
value at every step.

``--callback`` replays the same trials one after another through
:class:`bo.integrations.early_stopping.PFNEarlyStopping`'s decision instead (the Lightning
callback's rule, each run judged against the earlier ones, which are its ``history``), without
Optuna or Lightning.

``--use-params`` gives the surrogate every run's hyperparameters (the table's encoded
configurations, in [0, 1]; one-hot for a categorical): Optuna trials suggest them as floats in
[0, 1] from enqueued values (``PFNPruner(use_params=True)``), the callback gets them as
``config`` and ``history_configs``. Without it, each curve is read with the other curves but no
hyperparameters.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StudyOutcome:
    """One study on one table: steps trained, best completed final value, wrong prunes."""

    steps: int
    best: float
    n_pruned: int
    n_wrong: int


def run_study(table, rows: np.ndarray, pruner, use_params: bool = False) -> StudyOutcome:
    """Trials = ``rows`` of ``table`` in this order; ``pruner`` None runs every trial to its end.
    ``use_params``: each trial suggests its row's encoded configuration (names ``x00``, ``x01``,
    ... sort in the table's order, which is the order the pruner encodes them in)."""
    import optuna

    curves = table.curves  # (C, T)
    sign = 1.0 if table.higher_is_better else -1.0
    worst = -math.inf if table.higher_is_better else math.inf
    steps = 0
    wrong = 0
    best = worst  # best final value among the completed trials so far

    def objective(trial: optuna.Trial) -> float:
        nonlocal steps, wrong
        row = int(rows[trial.number])
        if use_params:
            for j in range(table.configs.shape[1]):
                trial.suggest_float(f"x{j:02d}", 0.0, 1.0)
        value = worst
        for step in range(1, curves.shape[1] + 1):
            value = float(curves[row, step - 1])
            value = worst if math.isnan(value) else value
            steps += 1
            trial.report(value, step)
            if step < curves.shape[1] and trial.should_prune():
                final = float(curves[row, -1])
                if math.isfinite(final) and sign * final > sign * best:
                    wrong += 1
                raise optuna.TrialPruned()
        return value

    def remember_best(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        nonlocal best
        if frozen.state == optuna.trial.TrialState.COMPLETE and sign * frozen.value > sign * best:
            best = float(frozen.value)

    study = optuna.create_study(
        direction="maximize" if table.higher_is_better else "minimize",
        pruner=pruner if pruner is not None else optuna.pruners.NopPruner(),
    )
    if use_params:
        for row in rows:
            study.enqueue_trial({f"x{j:02d}": float(x) for j, x in enumerate(table.configs[row])})
    study.optimize(objective, n_trials=len(rows), callbacks=[remember_best])
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return StudyOutcome(steps=steps, best=best, n_pruned=pruned, n_wrong=wrong)


def run_sequence(table, rows: np.ndarray, make_stopper) -> StudyOutcome:
    """The trials of :func:`run_study` one after another, each stopped by the callback
    ``make_stopper(history, row)`` makes (None: never stopped); ``history`` holds the earlier
    runs' values, ``row`` is the run's row of the table."""
    curves = table.curves  # (C, T)
    sign = 1.0 if table.higher_is_better else -1.0
    worst = -math.inf if table.higher_is_better else math.inf
    history: list[list[float]] = []
    steps = wrong = pruned = 0
    best = worst
    for row in rows:
        stopper = None if make_stopper is None else make_stopper(history, row)
        values: list[float] = []
        for step in range(1, curves.shape[1] + 1):
            value = float(curves[row, step - 1])
            values.append(worst if math.isnan(value) else value)
            steps += 1
            if stopper is not None and step < curves.shape[1]:
                stopper.values = values
                if stopper.decide(step).stop:
                    final = float(curves[row, -1])
                    wrong += math.isfinite(final) and sign * final > sign * best
                    pruned += 1
                    break
        else:
            if sign * values[-1] > sign * best:
                best = values[-1]
        history.append(values)
    return StudyOutcome(steps=steps, best=best, n_pruned=pruned, n_wrong=wrong)


def main() -> None:
    """Print the early-stopping table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="curve file in the shared HDF5 layout")
    parser.add_argument("--trials", type=int, default=100, help="trials per study")
    parser.add_argument("--seeds", type=int, default=1, help="studies (trial orders) per table")
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--min-steps", type=int, default=3)
    parser.add_argument("--tables", default=None, help="comma-separated table names")
    parser.add_argument("--checkpoint", default=None, help="surrogate (default: the shipped one)")
    parser.add_argument(
        "--callback",
        action="store_true",
        help="replay through PFNEarlyStopping's rule (the Lightning callback) instead of Optuna",
    )
    parser.add_argument(
        "--use-params",
        action="store_true",
        help="give the surrogate the runs' hyperparameters (the table's encoded configurations)",
    )
    args = parser.parse_args()

    from pfn.curve_table import read_curve_tables
    from pfn.surrogate import Surrogate

    if not args.callback:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    surrogate = Surrogate.load(args.checkpoint)
    tables = read_curve_tables(args.data, args.tables.split(",") if args.tables else None)
    wide = [t.name for t in tables if t.configs.shape[1] > surrogate.config.max_hps]
    if args.use_params and wide:  # the pruner would drop them silently, the callback refuse
        parser.error(
            f"--use-params: tables {wide} have more encoded hyperparameters than the surrogate's "
            f"{surrogate.config.max_hps}"
        )
    print(
        "| table | seed | steps (no pruning) | steps (pruned) | speed-up | best (no pruning) "
        "| best (pruned) | pruned | wrong | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    total_full = total_pruned = 0
    n_equal = n_runs = 0
    for table in tables:
        for seed in range(args.seeds):
            rows = np.random.default_rng(seed).permutation(len(table.curves))[: args.trials]
            start = time.perf_counter()
            if args.callback:
                from bo.integrations.early_stopping import PFNEarlyStopping

                def make_stopper(
                    history: list[list[float]], row: int, table=table, rows=rows
                ) -> PFNEarlyStopping:
                    configs = table.configs  # (C, D) in [0, 1]
                    earlier = rows[: len(history)]  # the rows of the history's runs, in order
                    hps = {}
                    if args.use_params:
                        hps = {"config": configs[row], "history_configs": list(configs[earlier])}
                    return PFNEarlyStopping(
                        "value",
                        max_epochs=table.curves.shape[1],
                        mode="max" if table.higher_is_better else "min",
                        history=history,
                        threshold=args.threshold,
                        min_epochs=args.min_steps,
                        surrogate=surrogate,
                        lower_bound=table.lower_bound,
                        upper_bound=table.upper_bound,
                        **hps,
                    )

                full = run_sequence(table, rows, None)
                cut = run_sequence(table, rows, make_stopper)
            else:
                from bo.integrations.optuna import PFNPruner

                full = run_study(table, rows, None)
                pruner = PFNPruner(
                    max_step=table.curves.shape[1],
                    threshold=args.threshold,
                    min_steps=args.min_steps,
                    surrogate=surrogate,
                    lower_bound=table.lower_bound,
                    upper_bound=table.upper_bound,
                    use_params=args.use_params,
                )
                cut = run_study(table, rows, pruner, args.use_params)
            elapsed = time.perf_counter() - start
            total_full += full.steps
            total_pruned += cut.steps
            n_equal += cut.best == full.best
            n_runs += 1
            print(
                f"| {table.name} | {seed} | {full.steps} | {cut.steps} | "
                f"{full.steps / cut.steps:.2f}x | {full.best:.4g} | {cut.best:.4g} | "
                f"{cut.n_pruned} | {cut.n_wrong} | {elapsed:.0f} |"
            )
    print(
        f"\ntotal speed-up {total_full / total_pruned:.2f}x; the pruned study found the same best "
        f"final value in {n_equal} of {n_runs} studies"
    )


if __name__ == "__main__":
    main()
