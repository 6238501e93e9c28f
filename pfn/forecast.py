"""Predictive distributions of M target scores, one interface for the PFN and its baselines.

The offline evaluation (:mod:`pfn.evaluate`) scores every method the same way: mean
log-likelihood of the true targets, squared error of the predictive mean, coverage of the central
interval, and calibration. A :class:`Forecast` is what a method returns for the M targets of one
evaluation task; everything is in score units (higher is better) on the support [0, 1].

* :class:`BarForecast`: the PFN's bar distribution (exact on each bucket).
* :class:`GaussianForecast`: a normal distribution truncated to [0, 1], for the baselines. The
  truncation makes it a proper density on the same support as the PFN's, so that
  log-likelihoods are comparable (an untruncated normal would put mass on impossible scores).

Shapes: ``M`` targets; ``y`` and ``q`` broadcast with (M,); every method returns float64 (M,).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import special, stats
from torch import Tensor

from pfn.bar_distribution import BarDistribution

if TYPE_CHECKING:
    from pfn.eval_tasks import EvalTask

__all__ = ["BarForecast", "Forecast", "ForecastMethod", "GaussianForecast"]

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
