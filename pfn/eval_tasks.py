"""Evaluation tasks built from recorded curves, the way the prior builds training sequences.

One :class:`EvalTask` is what a surrogate sees in a freeze-thaw run: several configurations, each
observed for a prefix of its curve, and the question "where does every one of them end?".
:func:`build_eval_task` draws it from a :class:`~pfn.curve_table.CurveTable`:

1. Curves are visited in a random order; each gets a prefix length ``L ~ U{1 .. T-1}`` (never the
   whole curve, so every target lies in the future) and contributes its recorded points among the
   first ``L`` steps, until ``n_context`` points are collected (the last curve is cut short). If
   the table has fewer points to give, the task is smaller (``EvalTask.n_context`` says how big).
2. The targets are the final values (``t = 1``) of every curve in the context whose final value was
   recorded (not NaN). A curve whose final value is missing stays in the context: its prefix still
   informs the others.
3. Scores: a :class:`~pfn.scaling.MetricScaler` is fitted to the best raw value of each context
   curve (:meth:`~pfn.scaling.MetricScaler.fit_runs`: what a user would have at that moment; the
   targets are never looked at), and maps context and targets alike.
   All metrics of the evaluation are in this score space. Diverged values (inf, 1e34) stay in and
   get low scores; NaN means "not recorded" and is dropped.

Shapes: ``C`` curves in the task, ``D`` hyperparameters, ``N`` context points, ``M`` targets.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np

from pfn.curve_table import CurveTable
from pfn.scaling import MetricScaler

__all__ = ["EvalTask", "NoTargets", "build_eval_task", "unseen_rows"]


@dataclass(frozen=True, eq=False)
class EvalTask:
    """A set of partial curves and the final values to predict, in score units.

    A method predicting a task may read everything but ``target_y`` (see :meth:`hidden`).
    """

    table: str  # name of the CurveTable it came from
    seed: int
    n_context: int  # N, points actually in the context
    rows: np.ndarray  # (C,) row of each curve in the table
    configs: np.ndarray  # (C, D) hyperparameters in [0, 1]
    ctx_curve: np.ndarray  # (N,) int, curve index in [0, C) of each context point
    ctx_t: np.ndarray  # (N,) normalised times in (0, 1)
    ctx_y: np.ndarray  # (N,) scores in [0, 1]
    target_curve: np.ndarray  # (M,) int, curve index of each target
    target_t: np.ndarray  # (M,) times to predict (1.0: the final value)
    target_y: np.ndarray  # (M,) true scores; NaN in a hidden task
    scaler: MetricScaler  # raw metric <-> score map used

    @property
    def n_curves(self) -> int:
        """C."""
        return int(self.rows.shape[0])

    @property
    def n_targets(self) -> int:
        """M."""
        return int(self.target_curve.shape[0])

    def hidden(self) -> EvalTask:
        """The same task with ``target_y`` replaced by NaN: what a method is given."""
        return replace(self, target_y=np.full_like(self.target_y, np.nan))

    def curve_points(self, curve: int) -> tuple[np.ndarray, np.ndarray]:
        """(t, y) of one curve's context points, in time order."""
        sel = self.ctx_curve == curve
        order = np.argsort(self.ctx_t[sel], kind="stable")
        return self.ctx_t[sel][order], self.ctx_y[sel][order]


class NoTargets(ValueError):
    """No curve drawn for the task has a recorded final value: the task has nothing to score."""


def _task_seed(table: CurveTable, n_context: int, seed: int) -> list[int]:
    # The table name only decorrelates the draws of different tables; nothing depends on it.
    return [seed, n_context, zlib.crc32(table.name.encode())]


def build_eval_task(
    table: CurveTable,
    *,
    n_context: int,
    seed: int,
    time_mode: str = "step",
    bounds_as_ends: bool = True,
) -> EvalTask:
    """Draw one evaluation task (see the module docstring).

    Args:
        table: the recorded curves.
        n_context: N, the number of context points wanted.
        seed: the draw's seed (with the table name and N).
        time_mode: how steps become times, see :meth:`CurveTable.times`.
        bounds_as_ends: passed to :meth:`MetricScaler.fit` (False: the score range comes from the
            context's values even for a bounded metric).

    Returns:
        The task, with at least one target.

    Raises:
        ValueError: ``n_context < 1``, a table with fewer than 2 steps, or no curve with both a
            recorded prefix point and a recorded final value.
    """
    if n_context < 1:
        raise ValueError(f"n_context must be >= 1, got {n_context}")
    if table.n_steps < 2:
        raise ValueError(f"table {table.name!r} has {table.n_steps} step(s); need at least 2")
    rng = np.random.default_rng(_task_seed(table, n_context, seed))
    times = table.times(time_mode)  # (T,)
    recorded = ~np.isnan(table.curves)  # (C, T)
    eligible = np.flatnonzero(recorded[:, :-1].any(axis=1))
    rows, ctx_curve, ctx_cols = [], [], []
    total = 0
    for row in rng.permutation(eligible):
        if total >= n_context:
            break
        length = int(rng.integers(1, table.n_steps))  # prefix of L steps, L in 1..T-1
        cols = np.flatnonzero(recorded[row, :length])[: n_context - total]
        if cols.size == 0:
            continue
        ctx_curve.append(np.full(cols.size, len(rows)))
        ctx_cols.append(cols)
        rows.append(row)
        total += cols.size
    if not rows:
        raise ValueError(f"table {table.name!r} has no recorded prefix to build a task from")
    rows_arr = np.asarray(rows)
    curve_idx = np.concatenate(ctx_curve)
    cols_arr = np.concatenate(ctx_cols)
    raw_ctx = table.curves[rows_arr[curve_idx], cols_arr]
    scaler = MetricScaler.fit_runs(
        np.split(raw_ctx, np.cumsum([c.size for c in ctx_cols])[:-1]),  # per curve, in order
        higher_is_better=table.higher_is_better,
        lower_bound=table.lower_bound,
        upper_bound=table.upper_bound,
        bounds_as_ends=bounds_as_ends,
    )
    has_final = recorded[rows_arr, -1]
    target_curve = np.flatnonzero(has_final)
    if target_curve.size == 0:
        raise NoTargets(
            f"table {table.name!r}: none of the {len(rows)} curves drawn has a recorded final value"
        )
    return EvalTask(
        table=table.name,
        seed=seed,
        n_context=total,
        rows=rows_arr,
        configs=table.configs[rows_arr],
        ctx_curve=curve_idx,
        ctx_t=times[cols_arr],
        ctx_y=scaler.to_score(raw_ctx),
        target_curve=target_curve,
        target_t=np.ones(target_curve.size),
        target_y=scaler.to_score(table.curves[rows_arr[target_curve], -1]),
        scaler=scaler,
    )


def unseen_rows(table: CurveTable, task: EvalTask, *, new_configs: bool = False) -> np.ndarray:
    """The (R,) rows of ``table`` whose curves are not in ``task``, increasing.

    With ``new_configs``, also drop rows whose configuration (encoded, to 9 decimals) equals one in
    the task: on a table with repeated configurations (several seeds of one learner), those are
    other runs of a configuration the task has seen, not configurations it has not.
    """
    rows = np.setdiff1d(np.arange(table.n_curves), task.rows)
    if not new_configs:
        return rows
    seen = {row.tobytes() for row in np.round(task.configs, 9)}
    return np.array(
        [r for r in rows if np.round(table.configs[r], 9).tobytes() not in seen], dtype=np.int64
    )
