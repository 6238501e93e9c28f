"""The monotone map between a raw metric (accuracy, loss, ...) and the PFN's score in [0, 1].

The network only knows scores: values in [0, 1] where higher is better. Real metrics are not like
that: losses are minimised and unbounded above (TaskSet validation losses sit near ln 2 ≈ 0.69 for
most runs, the best reach 0.1–0.5, and diverged runs report values up to 1e34 or NaN). A
:class:`MetricScaler` is one fixed, documented, strictly monotone map ``to_score`` and its
inverse ``to_metric``; the offline evaluation, the optimiser and
:meth:`pfn.surrogate.Surrogate.predict_final` all use it, so that predictions can be reported in
the metric's own units.

The map, in the "progress" coordinate ``u = (x - worst) / (best - worst)`` (0 at the worst end of a
reference range, 1 at its best end; this also flips losses, since ``best < worst`` for them):

* **Linear in the reference range.** ``u ∈ [0, 1]`` maps linearly onto ``[s_lo, s_hi]``. A side
  with a known bound is a *hard* end: the bound is the reference end and its score is 0 (worst) or
  1 (best); values past it are clipped. A side without a bound is *soft*: its reference end is
  estimated from the data and gets score ``tail`` (worst side) or ``1 - tail`` (best side), leaving
  a share ``tail`` (default 0.1) of the score range for values beyond it.
* **Reciprocal-log squashing beyond a soft end.** Past the worst end (``u < 0``, distance
  ``d = -u``) ``s = s_lo / (1 + log1p(k d))`` with ``k = (s_hi - s_lo) / s_lo``; past the best end
  symmetrically ``s = 1 - (1 - s_hi) / (1 + log1p(k' (u - 1)))``. Value *and slope* are
  continuous at the reference ends (so a curve crossing them keeps its shape), and because of the
  logarithm even a loss of 1e34 keeps a distinct, positive score (~0.001) that still orders it
  after a loss of 1e6 (~0.006). An arctan or exponential squash would instead round all large
  values to the same score.
  The inverse is exact: ``u = -expm1(s_lo / s - 1) / k`` below, likewise above.
* **Diverged points** (NaN, +inf, -inf) get score 0, the worst.

Why a reference range from robust statistics of the observed values? The interesting part of a loss
metric is where most runs and the best runs are, not where the diverged ones are; the min/max of the
data would let one 1e34 loss squeeze everything else into a sliver of the score range, while a
fixed range (say [0, 10] for any loss) would put TaskSet's whole interesting range into 3% of it. So
:meth:`MetricScaler.fit` takes, in the progress direction, the best observed value as the soft best
end (future improvements go into the squashed top ``tail``), and as the soft worst end the 5%-worst
observed value, but no further from the median than ``3 × spread`` (``spread`` = best - median),
so diverged runs cannot stretch the range unless they are the majority (an interquartile range
would be stretched as soon as a quarter of the points diverge, which happens on real loss curves).
When the best side has a known bound (a loss >= 0), the worst end is also kept within 10 times the
best value's distance from that bound: with few runs (an optimiser's first two, one of them
diverged at 5e8) the quantiles alone would put the worst end at the diverged value and every
sensible value at a score of ~1.
For TaskSet's GRU task (losses: best 0.36, median 0.71, 5%-worst 78 from divergence; bound 0)
that gives the linear range loss ∈ [0, 1.77] → score [1, 0.1]: the runs between 0.36 and 0.71
span scores 0.82–0.64, and the known bound costs the unused scores above 0.82, the price of a map
that never has to guess how good a run can get.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

# Quantile (in the progress direction) of the observed values used as the soft worst end.
_WORST_QUANTILE = 0.05
# The soft worst end lies at most this many spreads below the median.
_MAX_SPREADS = 3.0
# With a known bound on the best side (a loss >= 0), the soft worst end lies at most this many times
# as far from the bound as the best value.
_MAX_BOUND_RATIO = 10.0


@dataclass(frozen=True, kw_only=True)
class MetricScaler:
    """A fixed monotone map between a metric and a score in [0, 1] (higher is better).

    See the module docstring for the formula. Build one with :meth:`fit`, or directly for a known
    range, e.g. accuracy: ``MetricScaler(higher_is_better=True, worst=0.0, best=1.0,
    worst_is_bound=True, best_is_bound=True)`` (the identity).
    """

    higher_is_better: bool  # True for accuracies, False for losses
    worst: float  # metric value at the worst end of the linear reference range
    best: float  # metric value at the best end (best < worst for losses)
    worst_is_bound: bool  # True: `worst` is a hard bound (score 0); False: squash beyond it
    best_is_bound: bool  # True: `best` is a hard bound (score 1); False: squash beyond it
    tail: float = 0.1  # score share kept for values beyond each soft (unbounded) end

    def __post_init__(self) -> None:
        if not (math.isfinite(self.worst) and math.isfinite(self.best)):
            raise ValueError(
                f"MetricScaler worst and best must be finite, got worst={self.worst}, "
                f"best={self.best}"
            )
        if (self.best > self.worst) != self.higher_is_better or self.best == self.worst:
            direction = "above" if self.higher_is_better else "below"
            raise ValueError(
                f"MetricScaler best={self.best} must lie strictly {direction} worst={self.worst} "
                f"when higher_is_better={self.higher_is_better}"
            )
        if not 0.0 < self.tail < 0.5:
            raise ValueError(f"MetricScaler tail must lie in (0, 0.5), got {self.tail}")

    @classmethod
    def fit(
        cls,
        values: ArrayLike,
        *,
        higher_is_better: bool,
        lower_bound: float | None = None,
        upper_bound: float | None = None,
        tail: float = 0.1,
        bounds_as_ends: bool = True,
    ) -> MetricScaler:
        """Fit the reference range to observed metric values.

        Args:
            values: observed metric values, any shape; NaN and ±inf (diverged) are ignored here.
            higher_is_better: True for accuracies, False for losses.
            lower_bound, upper_bound: known bounds of the metric in its own units (None or ±inf
                for an unbounded side). A bounded side becomes a hard end of the linear range.
            tail: score share for values beyond each unbounded side.
            bounds_as_ends: True: a known bound is a hard end of the range (score 0 or 1).
                False: both ends come from the data (soft), whatever the bounds; values past a
                bound are clipped to it, and no end passes it. This spreads data that sits in a
                narrow part of a bounded range (losses far from 0, accuracies in 0.90-0.95) over
                the score range.

        Returns:
            The scaler; with both bounds finite it is the plain linear map between them.

        Raises:
            ValueError: the bounds are not ordered, or a side is unbounded and no finite value
                was observed to place it.
        """
        lo = -math.inf if lower_bound is None else float(lower_bound)
        hi = math.inf if upper_bound is None else float(upper_bound)
        if math.isnan(lo) or math.isnan(hi) or not lo < hi:
            raise ValueError(
                f"lower_bound must be smaller than upper_bound, got {lower_bound}, {upper_bound}"
            )
        sign = 1.0 if higher_is_better else -1.0
        # v: the metric in the progress direction (higher is better), bounds likewise.
        v_worst_bound, v_best_bound = (lo, hi) if higher_is_better else (-hi, -lo)
        worst_is_bound, best_is_bound = math.isfinite(v_worst_bound), math.isfinite(v_best_bound)
        if not bounds_as_ends:
            worst_is_bound = best_is_bound = False
        if worst_is_bound and best_is_bound:
            return cls(
                higher_is_better=higher_is_better,
                worst=sign * v_worst_bound,
                best=sign * v_best_bound,
                worst_is_bound=True,
                best_is_bound=True,
                tail=tail,
            )
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        x = x[np.isfinite(x)]
        if x.size == 0:
            raise ValueError(
                "cannot fit a MetricScaler for an unbounded metric without any finite value"
            )
        v = np.clip(sign * x, v_worst_bound, v_best_bound)
        q_worst, med, top = np.quantile(v, [_WORST_QUANTILE, 0.5, 1.0])
        spread = top - med
        v_best = v_best_bound if best_is_bound else float(top)
        v_worst = (
            v_worst_bound if worst_is_bound else float(max(q_worst, med - _MAX_SPREADS * spread))
        )
        if math.isfinite(v_best_bound) and not worst_is_bound and top < v_best_bound:
            # A loss >= 0: its bound gives a scale, so that a few diverged runs cannot set the
            # range (runs at 0.7 and 5e8 would otherwise map 0.7 to a score of 0.99999999).
            v_worst = max(v_worst, v_best_bound - _MAX_BOUND_RATIO * (v_best_bound - top))
        # Degenerate data (one value, or all equal): open the range to 10% of the best value's
        # size, towards the better side (a first observation is usually a run's worst), unless the
        # best side has a bound there (a hard end, or a bound that bounds_as_ends=False ignores).
        min_width = max(0.1 * abs(float(top)), 1e-6)
        if v_best - v_worst < min_width:
            if not best_is_bound and v_worst + min_width <= v_best_bound:
                v_best = v_worst + min_width
            else:
                v_best = min(v_best, v_best_bound)
                v_worst = v_best - min_width
        return cls(
            higher_is_better=higher_is_better,
            worst=sign * v_worst,
            best=sign * v_best,
            worst_is_bound=worst_is_bound,
            best_is_bound=best_is_bound,
            tail=tail,
        )

    @classmethod
    def fit_runs(
        cls,
        runs: Sequence[ArrayLike],
        *,
        higher_is_better: bool,
        lower_bound: float | None = None,
        upper_bound: float | None = None,
        tail: float = 0.1,
        bounds_as_ends: bool = True,
    ) -> MetricScaler:
        """:meth:`fit` to the best finite value of each run (runs without one are skipped).

        Each run counts once, however many points it has: a diverged run observed for 50 steps
        (say losses from 1e10 down to 1e9) must not move the median and with it the whole range,
        which fitting to all points would do as soon as such runs hold half the observations.
        With fewer than two distinct bests (one run, say) the bests say nothing about the scale,
        so the fit uses every finite point: one loss curve 2.0, 1.0, 0.7, 0.6 spans the linear
        range [1.6, 0.6] instead of being squeezed below the worst end of a range [0.6, 0.54].
        """
        bests, points = [], []
        for values in runs:
            v = np.asarray(values, dtype=np.float64).reshape(-1)
            v = v[np.isfinite(v)]
            if v.size:
                bests.append(v.max() if higher_is_better else v.min())
                points.append(v)
        return cls.fit(
            bests if len(set(bests)) >= 2 else np.concatenate(points or [np.zeros(0)]),
            higher_is_better=higher_is_better,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            tail=tail,
            bounds_as_ends=bounds_as_ends,
        )

    @property
    def _score_range(self) -> tuple[float, float]:
        """Scores (s_lo, s_hi) of the worst and best reference ends."""
        s_lo = 0.0 if self.worst_is_bound else self.tail
        s_hi = 1.0 if self.best_is_bound else 1.0 - self.tail
        return s_lo, s_hi

    def to_score(self, values: ArrayLike) -> np.ndarray:
        """Metric values -> scores in [0, 1], higher is better.

        Args:
            values: metric values, any shape; NaN and ±inf count as diverged.

        Returns:
            float64 array of the same shape: strictly increasing in the metric's quality inside
            the bounds, 0 for diverged values, clipped to 0 / 1 past a hard bound.
        """
        x = np.asarray(values, dtype=np.float64)
        s_lo, s_hi = self._score_range
        r = s_hi - s_lo
        finite = np.isfinite(x)
        u = np.where(finite, (x - self.worst) / (self.best - self.worst), 0.0)
        score = s_lo + r * np.clip(u, 0.0, 1.0)
        if not self.worst_is_bound:
            d = np.maximum(-u, 0.0)
            score = np.where(u < 0, s_lo / (1.0 + np.log1p(d * (r / s_lo))), score)
        if not self.best_is_bound:
            d = np.maximum(u - 1.0, 0.0)
            gap = 1.0 - s_hi
            score = np.where(u > 1, 1.0 - gap / (1.0 + np.log1p(d * (r / gap))), score)
        return np.where(finite, np.clip(score, 0.0, 1.0), 0.0)

    def to_metric(self, scores: ArrayLike) -> np.ndarray:
        """Scores in [0, 1] -> metric values: the exact inverse of :meth:`to_score`.

        Exact for scores strictly inside the range that ``to_score`` reaches. Score 0 maps to the
        worst hard bound, or to the unbounded worst end (``inf`` for a loss, ``-inf`` for an
        accuracy-like metric); score 1 likewise at the best end.

        Args:
            scores: any shape, values in [0, 1].

        Returns:
            float64 array of the same shape.

        Raises:
            ValueError: a score is NaN or outside [0, 1].
        """
        s = np.asarray(scores, dtype=np.float64)
        if not np.all((s >= 0.0) & (s <= 1.0)):
            raise ValueError("scores must lie in [0, 1] (and not be NaN)")
        s_lo, s_hi = self._score_range
        r = s_hi - s_lo
        u = (s - s_lo) / r
        with np.errstate(divide="ignore", over="ignore"):
            if not self.worst_is_bound:
                below = -np.expm1(s_lo / np.maximum(s, 0.0) - 1.0) * (s_lo / r)
                u = np.where(s < s_lo, below, u)
            if not self.best_is_bound:
                gap = 1.0 - s_hi
                above = 1.0 + np.expm1(gap / np.maximum(1.0 - s, 0.0) - 1.0) * (gap / r)
                u = np.where(s > s_hi, above, u)
        u = np.where(s <= 0.0, -np.inf if not self.worst_is_bound else 0.0, u)
        u = np.where(s >= 1.0, np.inf if not self.best_is_bound else 1.0, u)
        with np.errstate(invalid="ignore"):
            return self.worst + u * (self.best - self.worst)
