"""Acquisition functions of the freeze-thaw loop: which run to advance by one step.

All of them follow ifBO's "look ahead h, act one step" (``../shared/design/reference.md`` §4):
once per decision, shared by every candidate,

* a horizon ``h ~ U{1 .. min(remaining budget, max_steps)}`` steps, and
* a threshold ``T = f_best + τ (1 − f_best)`` with ``τ = 10^U(−4, −1)``, ``f_best`` being the best
  score observed so far at any step;

then every candidate (a paused run at step ``b``, or a new configuration at ``b = 0``) is scored
by the surrogate's predictive distribution of its score at step ``min(b + h, max_steps)``:

* ``mfpi-random``: ``P(y > T)`` (the reference);
* ``mfei-random``: ``E[max(y − T, 0)]`` (our default, ``DEFAULT_ACQUISITION``: measured better);
* ``ucb-random``: the 0.9 quantile of ``y`` (optimism without a threshold).

The argmax is resumed for one step (or started, for a new configuration).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pfn.forecast import BarForecast, ViewMixture
from pfn.scaling import MetricScaler

__all__ = [
    "ACQUISITIONS",
    "DEFAULT_ACQUISITION",
    "Lookahead",
    "acquisition_values",
    "draw_lookahead",
    "pick_argmax",
    "score_context",
]

ACQUISITIONS = ("mfpi-random", "mfei-random", "ucb-random")
# The default of every optimiser entry point (FreezeThaw, optimize, evaluate hpo, the Lightning and
# Ray integrations). MFEI, not the reference's MFPI: on taskset_dev.h5 (7 tasks x 10 seeds,
# `curvepfn evaluate hpo --seeds 10 --budget 1000 --acquisition ...`) it had the lower mean
# normalised regret at budgets 100/300/1000 with both surrogates measured: 0.185/0.106/0.039
# against MFPI's 0.229/0.149/0.056 (stage 7), 0.207/0.126/0.045 against
# 0.227/0.131/0.055 (stage 5). A likely reason, not measured: MFPI rewards any chance of a tiny
# gain, which noise alone gives runs near the incumbent; MFEI weighs the size of the gain.
DEFAULT_ACQUISITION = "mfei-random"
_UCB_QUANTILE = 0.9


@dataclass(frozen=True)
class Lookahead:
    """The random draws of one decision."""

    horizon: int  # h, steps to look ahead
    tau: float  # relative improvement asked for
    threshold: float  # T, in score units


def draw_lookahead(
    rng: np.random.Generator, *, remaining: int, max_steps: int, f_best: float
) -> Lookahead:
    """Draw the horizon and threshold of one decision (see the module docstring).

    Args:
        rng: the decision's random generator.
        remaining: steps of budget left (>= 1); use ``max_steps`` when the budget is unknown.
        max_steps: the longest a run can be trained.
        f_best: best score observed so far, in [0, 1].
    """
    if remaining < 1 or max_steps < 1:
        raise ValueError(f"remaining and max_steps must be >= 1, got {remaining}, {max_steps}")
    horizon = int(rng.integers(1, min(remaining, max_steps) + 1))
    tau = float(10.0 ** rng.uniform(-4.0, -1.0))
    return Lookahead(horizon, tau, f_best + tau * (1.0 - f_best))


def acquisition_values(
    name: str, forecast: BarForecast | ViewMixture, threshold: float
) -> np.ndarray:
    """(M,) acquisition values of M candidates whose look-ahead scores ``forecast`` predicts.

    With a :class:`~pfn.forecast.ViewMixture` (the surrogate's two views), MFPI and MFEI are
    mixed from each view's (both are linear in the predictive), so the single-curve view is
    scored once per distinct row; UCB's quantile reads the mixture.

    Raises:
        ValueError: unknown ``name``.
    """
    if name == "mfpi-random":
        return forecast.pi(threshold)
    if name == "mfei-random":
        return forecast.ei(threshold)
    if name == "ucb-random":
        return forecast.quantile(_UCB_QUANTILE)
    raise ValueError(f"unknown acquisition {name!r}; choose from {', '.join(ACQUISITIONS)}")


def score_context(
    curves: Sequence[tuple[Sequence[int], Sequence[float]]],
    scaler: MetricScaler,
    max_steps: int,
) -> tuple[list[int], list[float], list[float]]:
    """The surrogate's context for a decision: every observed point of every curve.

    Args:
        curves: per curve its (steps, values) in the metric's units; a curve may be empty.
            Non-finite values (diverged points, failures recorded as the worst value) score 0.
        scaler: the metric -> score map of this decision.
        max_steps: the longest a run is trained (``t = step / max_steps``).

    Returns:
        (ctx_curve, ctx_t, ctx_y), each (N,): the curve's index in ``curves``, time, score.
    """
    ctx_curve: list[int] = []
    ctx_t: list[float] = []
    raw: list[float] = []
    for i, (steps, values) in enumerate(curves):
        ctx_curve += [i] * len(steps)
        ctx_t += [min(s, max_steps) / max_steps for s in steps]
        raw += list(values)
    scores = scaler.to_score(np.asarray(raw, dtype=np.float64))  # one call for all points
    return ctx_curve, ctx_t, scores.tolist()


def pick_argmax(values: np.ndarray, rng: np.random.Generator) -> int:
    """Index of the largest value; ties broken uniformly with ``rng`` (drawn only on a tie)."""
    top = np.flatnonzero(values == values.max())
    return int(top[rng.integers(top.size)]) if top.size > 1 else int(top[0])
