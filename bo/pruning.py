"""The LC-PFN early-stopping rule on partial learning curves, free of any framework.

A run is hopeless once, at every later step ``t'`` up to its last, the surrogate gives it at most
``threshold`` probability of beating a reference value (the best final value of other runs):

    stop  iff  P(y_t' better than y_best) <= threshold  for t' = last + 1, ..., max_step

(Adriaensen et al., "Efficient Bayesian Learning Curve Extrapolation using Prior-Data Fitted
Networks", NeurIPS 2023). :func:`beat_probabilities` computes those probabilities in one forward
pass, reading the run's curve and, as context, other runs' curves (FT-PFN's use). It serves
:class:`bo.integrations.optuna.PFNPruner` and
:class:`bo.integrations.early_stopping.PFNEarlyStopping`.

Shapes: ``C`` curves, ``D`` encoded hyperparameters, ``N`` context points, ``L`` later steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bo.space import is_number
from pfn.scaling import MetricScaler
from pfn.surrogate import Surrogate

__all__ = ["RuleSettings", "beat_probabilities", "check_rule"]


@dataclass(frozen=True)
class RuleSettings:
    """The stop rule's checked settings (see :func:`check_rule`)."""

    max_step: int  # a full run's last step (or epoch)
    min_steps: int  # never stop with fewer measured values
    threshold: float  # stop when no later step beats the reference with more chance than this
    lower_bound: float | None  # known bounds of the metric; None: unbounded on that side
    upper_bound: float | None


def check_rule(
    *,
    max_step: Any,
    min_steps: Any,
    threshold: Any,
    lower_bound: Any,
    upper_bound: Any,
    surrogate: Any,
    names: tuple[str, str] = ("max_step", "min_steps"),
) -> RuleSettings:
    """Check the arguments every user of the rule takes, naming the bad one.

    Integers may be NumPy integers; numbers may be NumPy numbers or 0-d arrays or tensors.
    Booleans and strings are refused.
    ``names``: what the caller calls ``max_step`` and ``min_steps`` (e.g. ``max_epochs``).

    Raises:
        ValueError: a step count is not an integer >= 1, ``min_steps`` exceeds ``max_step``, the
            threshold is outside [0, 1), a bound is not a finite number, the bounds are not in
            increasing order, or ``surrogate`` is neither a Surrogate nor None.
    """
    max_name, min_name = names
    threshold, lower_bound, upper_bound = map(_scalar, (threshold, lower_bound, upper_bound))
    for name, value in ((max_name, max_step), (min_name, min_steps)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if min_steps > max_step:
        raise ValueError(
            f"{min_name}={min_steps} exceeds {max_name}={max_step}: the rule would never act"
        )
    if not is_number(threshold) or not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be a number in [0, 1), got {threshold!r}")
    for name, bound in (("lower_bound", lower_bound), ("upper_bound", upper_bound)):
        if bound is not None and not (is_number(bound) and math.isfinite(bound)):
            raise ValueError(
                f"{name} must be a finite number, or None for an unbounded side, got {bound!r}"
            )
    if lower_bound is not None and upper_bound is not None and not lower_bound < upper_bound:
        raise ValueError(
            f"lower_bound must be smaller than upper_bound, got {lower_bound}, {upper_bound}"
        )
    if surrogate is not None and not isinstance(surrogate, Surrogate):
        raise ValueError(
            f"surrogate must be a pfn.surrogate.Surrogate or None, got {type(surrogate)!r}"
        )
    return RuleSettings(
        max_step=int(max_step),
        min_steps=int(min_steps),
        threshold=float(threshold),
        lower_bound=None if lower_bound is None else float(lower_bound),
        upper_bound=None if upper_bound is None else float(upper_bound),
    )


def _scalar(x: Any) -> Any:
    """A 0-d NumPy array or torch tensor as its Python number; anything else unchanged."""
    if getattr(x, "ndim", None) == 0 and hasattr(x, "item") and not isinstance(x, np.generic):
        return x.item()
    return x


def beat_probabilities(
    surrogate: Surrogate,
    curves: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    best: float,
    last_step: int,
    max_step: int,
    higher_is_better: bool,
    scale_runs: Sequence[np.ndarray] | None = None,
    configs: np.ndarray | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The probability that curve 0 beats ``best`` at each step after ``last_step``.

    Args:
        surrogate: the network.
        curves: per curve its (steps, values), each (n,), steps in ``1 .. max_step``, values in
            the metric's units without NaN; curve 0 is the run decided on, the others are
            context (each with at least one point).
        best: the reference, in the metric's units.
        last_step: curve 0's latest step (its last reported one, measured or not); the
            queries are ``last_step + 1 .. max_step``.
        max_step: the last step of a run (steps become ``t = step / max_step``).
        higher_is_better: the metric's direction.
        scale_runs: the values the metric-to-score map is fitted to, one array per run
            (:meth:`pfn.scaling.MetricScaler.fit_runs`); None: the curves' values.
        configs: (C, D) hyperparameters of the curves in [0, 1]; None: none (D = 0).
        lower_bound, upper_bound: known bounds of the metric (None: unbounded there).

    Returns:
        (L,) the later steps and (L,) the probabilities of beating ``best`` there.

    Raises:
        ValueError: ``last_step`` is not below ``max_step``, or the curves are malformed.
    """
    if not 0 <= last_step < max_step:
        raise ValueError(f"last_step must lie in [0, max_step={max_step}), got {last_step}")
    if not curves:
        raise ValueError("give at least the run's own curve")
    runs = [v for _, v in curves] if scale_runs is None else list(scale_runs)
    scaler = MetricScaler.fit_runs(
        runs, higher_is_better=higher_is_better, lower_bound=lower_bound, upper_bound=upper_bound
    )
    c = len(curves)
    cfg = np.zeros((c, 0)) if configs is None else np.asarray(configs, dtype=np.float64)
    ctx_curve = np.concatenate([np.full(np.size(s), i) for i, (s, _) in enumerate(curves)])
    ctx_t = np.concatenate([np.asarray(s, dtype=np.float64) for s, _ in curves]) / max_step
    ctx_y = scaler.to_score(np.concatenate([np.asarray(v, dtype=np.float64) for _, v in curves]))
    later = np.arange(last_step + 1, max_step + 1)  # (L,)
    forecast = surrogate.forecast(
        cfg,
        ctx_curve=ctx_curve,
        ctx_t=ctx_t,
        ctx_y=ctx_y,
        qry_curve=np.zeros(later.size, dtype=np.int64),
        qry_t=later / max_step,
    )
    best_score = float(scaler.to_score(best))
    return later, np.clip(1.0 - forecast.cdf(best_score), 0.0, 1.0)
