"""Predictive distributions of M target scores, one interface for the PFN and its baselines.

The offline evaluation (:mod:`pfn.evaluate`) scores every method the same way: mean
log-likelihood of the true targets, squared error of the predictive mean, coverage of the central
interval, and calibration. A :class:`Forecast` is what a method returns for the M targets of one
evaluation task; everything is in score units (higher is better) on the support [0, 1].

* :class:`BarForecast`: the PFN's bar distribution (exact on each bucket).
* :class:`ViewMixture`: the surrogate's two-view predictive kept as its two parts, so that
  quantities linear in the predictive with one argument for all targets (PI, EI, mean) are
  worked out on each part, the single-curve view's once per distinct row (the optimiser's
  decisions).
* :class:`GaussianForecast`: a normal distribution truncated to [0, 1], for the baselines. The
  truncation makes it a proper density on the same support as the PFN's, so that
  log-likelihoods are comparable (an untruncated normal would put mass on impossible scores).

Shapes: ``M`` targets; ``y`` and ``q`` broadcast with (M,); every method returns float64 (M,).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import special, stats
from torch import Tensor

from pfn.bar_distribution import BarDistribution

if TYPE_CHECKING:
    from pfn.eval_tasks import EvalTask

__all__ = ["BarForecast", "Forecast", "ForecastMethod", "GaussianForecast", "ViewMixture"]

# The smallest standard deviation a Gaussian forecast may have (in score units): below this a
# single exact hit would dominate every mean log-likelihood.
MIN_STD = 1e-4


class Forecast(ABC):
    """The predictive distributions of M targets on [0, 1]."""

    @abstractmethod
    def mean(self) -> np.ndarray:
        """(M,) predictive means."""

    @abstractmethod
    def log_prob(self, y: ArrayLike) -> np.ndarray:
        """(M,) log densities at ``y`` (broadcast with (M,))."""

    @abstractmethod
    def cdf(self, y: ArrayLike) -> np.ndarray:
        """(M,) probabilities of a value <= ``y``."""

    @abstractmethod
    def quantile(self, q: ArrayLike) -> np.ndarray:
        """(M,) values below which lies probability ``q`` in [0, 1]."""

    def interval(self, mass: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper), each (M,): the central interval holding probability ``mass``."""
        if not 0.0 < mass < 1.0:
            raise ValueError(f"mass must lie in (0, 1), got {mass}")
        tail = (1.0 - mass) / 2.0
        return self.quantile(tail), self.quantile(1.0 - tail)


@dataclass(frozen=True, eq=False)
class BarForecast(Forecast):
    """A PFN output: logits over the buckets of ``distribution``.

    Args:
        logits: (M, K) on the CPU; only their softmax matters (a mixture of predictives, e.g. the
            surrogate's two views, passes log-probabilities).
        distribution: the bucket borders (on the CPU).
    """

    logits: Tensor
    distribution: BarDistribution = field(repr=False)

    def __post_init__(self) -> None:
        if self.logits.ndim != 2 or self.logits.shape[1] != self.distribution.n_buckets:
            raise ValueError(
                f"logits must have shape (M, {self.distribution.n_buckets}), got "
                f"{tuple(self.logits.shape)}"
            )

    def _arg(self, value: ArrayLike) -> Tensor:
        return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=torch.float32)

    @staticmethod
    def _out(x: Tensor) -> np.ndarray:
        return x.detach().double().numpy()

    def mean(self) -> np.ndarray:
        return self._out(self.distribution.mean(self.logits))

    def log_prob(self, y: ArrayLike) -> np.ndarray:
        return self._out(self.distribution.log_prob(self.logits, self._arg(y)))

    def cdf(self, y: ArrayLike) -> np.ndarray:
        return self._out(self.distribution.cdf(self.logits, self._arg(y)))

    def quantile(self, q: ArrayLike) -> np.ndarray:
        return self._out(self.distribution.quantile(self.logits, self._arg(q)))

    def pi(self, threshold: float) -> np.ndarray:
        """(M,) probabilities of improvement ``P(Y > threshold)`` (the MFPI score)."""
        return self._out(self.distribution.pi(self.logits, float(threshold)))

    def ei(self, threshold: float) -> np.ndarray:
        """(M,) expected improvements ``E[max(Y - threshold, 0)]`` (the MFEI score)."""
        return self._out(self.distribution.ei(self.logits, float(threshold)))


@dataclass(frozen=True, eq=False)
class ViewMixture(Forecast):
    """The two-view predictive of M targets, kept as its parts (see
    :class:`pfn.surrogate.Surrogate`): ``(1 - w) p_context + w p_single`` for a target that reads
    the single-curve view, ``p_context`` for one that does not (its curve has no points).

    The single-curve view depends only on a target's own curve and time, so targets on the same
    curve at the same time share a row of it: ``single`` holds the U distinct rows and
    ``single_index`` says which one each target reads (-1: none). Quantities linear in the
    predictive with one argument for all targets (:meth:`pi`, :meth:`ei`, :meth:`mean`) are mixed
    after working them out on each part, the single view's on its U rows only, which skips
    building the (M, K) mixture; the others use :meth:`mixed`.

    Args:
        context: the (M,) context view.
        single: the (U,) single-curve view's distinct rows; None when no target reads it.
        single_index: (M,) int, the row of ``single`` each target reads, or -1: the target's
            predictive is the context view alone.
        weight: ``w``, in [0, 1].

    Raises:
        ValueError: the parts' shapes disagree, or ``weight`` is outside [0, 1].
    """

    context: BarForecast
    single: BarForecast | None
    single_index: np.ndarray
    weight: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight must lie in [0, 1], got {self.weight}")
        m = self.context.logits.shape[0]
        index = np.asarray(self.single_index)
        if index.ndim != 1 or not (index.size == 0 or np.issubdtype(index.dtype, np.integer)):
            raise ValueError(f"single_index must be a 1-D integer array, got {index.dtype} "
                             f"of shape {index.shape}")  # fmt: skip
        index = index.astype(np.int64)  # an empty list arrives as float64
        object.__setattr__(self, "single_index", index)
        u = 0 if self.single is None else self.single.logits.shape[0]
        if index.shape != (m,) or (m and not -1 <= index.min() <= index.max() < u):
            raise ValueError(
                f"single_index must be ({m},) rows of the ({u},) single-curve view, or -1"
            )
        if self.single is not None:
            a, b = self.context.distribution, self.single.distribution
            if a is not b and (
                a.edge_atoms != b.edge_atoms or not torch.equal(a.borders, b.borders)
            ):
                raise ValueError("the two views must share their bucket borders and edge atoms")

    @cached_property
    def _reads_single(self) -> np.ndarray:
        """(M,) bool: the targets whose predictive mixes in the single-curve view."""
        return (
            self.single_index >= 0 if self.weight > 0.0 else np.zeros(len(self.single_index), bool)
        )

    def _mix(self, context: np.ndarray, single: Callable[[], np.ndarray]) -> np.ndarray:
        """``context`` with ``(1 - w) context + w single()[single_index]`` where a target reads
        the single-curve view (``single`` is not called when none does)."""
        sel = self._reads_single
        if not sel.any():
            return context
        out = context.copy()
        out[sel] = (1.0 - self.weight) * context[sel] + self.weight * single()[
            self.single_index[sel]
        ]
        return out

    def mixed(self) -> BarForecast:
        """The (M,) mixture as one bar distribution: the log-probabilities of its buckets (the
        context view's logits as they are where no target reads the single-curve view). Built
        once, on the first call."""
        return self._mixed

    @cached_property
    def _mixed(self) -> BarForecast:
        sel = self._reads_single
        if not sel.any():
            return self.context
        # (U, K) -> (S, K); log_softmax again costs U rows only, and lets `single` hold logits
        part = self._single()
        single = part.distribution.log_probs(part.logits)[torch.from_numpy(self.single_index[sel])]
        logits = self.context.distribution.log_probs(self.context.logits)
        rows = torch.from_numpy(sel)
        if self.weight < 1.0:
            single = torch.logaddexp(
                logits[rows] + math.log1p(-self.weight), single + math.log(self.weight)
            )
        logits[rows] = single
        return BarForecast(logits, self.context.distribution)

    def _single(self) -> BarForecast:
        assert self.single is not None  # only called where a target reads it
        return self.single

    def pi(self, threshold: float) -> np.ndarray:
        """(M,) probabilities of improvement, mixed from the parts' (exact: PI is linear)."""
        return self._mix(self.context.pi(threshold), lambda: self._single().pi(threshold))

    def ei(self, threshold: float) -> np.ndarray:
        """(M,) expected improvements, mixed from the parts' (exact: EI is linear)."""
        return self._mix(self.context.ei(threshold), lambda: self._single().ei(threshold))

    def mean(self) -> np.ndarray:
        """(M,) predictive means, mixed from the parts' (exact: the mean is linear)."""
        return self._mix(self.context.mean(), lambda: self._single().mean())

    def cdf(self, y: ArrayLike) -> np.ndarray:
        return self.mixed().cdf(y)

    def log_prob(self, y: ArrayLike) -> np.ndarray:
        return self.mixed().log_prob(y)

    def quantile(self, q: ArrayLike) -> np.ndarray:
        return self.mixed().quantile(q)


@dataclass(frozen=True, eq=False)
class GaussianForecast(Forecast):
    """Normal distributions N(loc, scale²) truncated to [0, 1].

    Args:
        loc: (M,) centres (the untruncated means; may lie outside [0, 1]).
        scale: (M,) standard deviations; raised to at least :data:`MIN_STD`.

    Raises:
        ValueError: shapes differ, or a value is NaN/inf, or a scale is negative.
    """

    loc: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        loc = np.asarray(self.loc, dtype=np.float64).reshape(-1)
        scale = np.asarray(self.scale, dtype=np.float64).reshape(-1)
        if loc.shape != scale.shape:
            raise ValueError(f"loc {loc.shape} and scale {scale.shape} must have the same shape")
        if not (np.isfinite(loc).all() and np.isfinite(scale).all()) or (scale < 0).any():
            raise ValueError("loc and scale must be finite and scale >= 0")
        object.__setattr__(self, "loc", loc)
        object.__setattr__(self, "scale", np.maximum(scale, MIN_STD))

    @property
    def _dist(self) -> stats.rv_continuous:
        a = (0.0 - self.loc) / self.scale
        b = (1.0 - self.loc) / self.scale
        return stats.truncnorm(a, b, loc=self.loc, scale=self.scale)

    def mean(self) -> np.ndarray:
        return np.clip(self._dist.mean(), 0.0, 1.0)

    def log_prob(self, y: ArrayLike) -> np.ndarray:
        # The log density via log-CDF differences, stable when [0, 1] is far in a tail.
        z = (np.asarray(y, dtype=np.float64) - self.loc) / self.scale
        a = (0.0 - self.loc) / self.scale
        b = (1.0 - self.loc) / self.scale
        log_mass = _log_diff_ndtr(a, b)
        out = stats.norm.logpdf(z) - np.log(self.scale) - log_mass
        inside = (np.asarray(y) >= 0.0) & (np.asarray(y) <= 1.0)
        return np.where(inside, out, -np.inf)

    def cdf(self, y: ArrayLike) -> np.ndarray:
        return self._dist.cdf(np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0))

    def quantile(self, q: ArrayLike) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        if not np.all((q >= 0.0) & (q <= 1.0)):
            raise ValueError("q must lie in [0, 1]")
        return np.clip(self._dist.ppf(q), 0.0, 1.0)


def _log_diff_ndtr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Φ(b) − Φ(a)) for a < b, accurate in both tails."""
    # In the upper tail use the symmetry Φ(b) − Φ(a) = Φ(−a) − Φ(−b).
    flip = a > 0
    lo = np.where(flip, -b, a)
    hi = np.where(flip, -a, b)
    log_hi, log_lo = special.log_ndtr(hi), special.log_ndtr(lo)
    return log_hi + np.log1p(-np.exp(np.minimum(log_lo - log_hi, 0.0)))


class ForecastMethod(ABC):
    """A way to predict the targets of an :class:`~pfn.eval_tasks.EvalTask` (PFN or baseline)."""

    name: str  # short identifier used in reports and on the command line

    @abstractmethod
    def predict(self, task: EvalTask) -> Forecast:
        """The forecast of ``task``'s M targets (``target_curve`` at ``target_t``).

        ``task.target_y`` must not be read (the harness passes ``task.hidden()``).
        """
