"""Baseline forecasters for the offline evaluation: last value, power-law ensemble, GP.

Each baseline is a :class:`~pfn.forecast.ForecastMethod` that reads a task's context (never its
``target_y``) and returns a :class:`~pfn.forecast.GaussianForecast` (a normal truncated to the
score range [0, 1]), so that its log-likelihood is comparable with the PFN's bar distribution.
Each is deterministic given its config's ``seed`` and fast enough for thousands of tasks: for a
task of 1800 points on one CPU thread, milliseconds (last value), about 0.1 s (power law) and
about half a second (GP).

* :class:`LastValue` (``"last-value"``): the forecast is the curve's last observed score. Its
  uncertainty comes from the task itself: every pair of points ``i < j`` of one context curve gives
  a change ``r = y_j - y_i`` over a gap ``g = t_j - t_i``, and ``E[r²] = a + b·g`` (``a, b >= 0``)
  is fitted by non-negative least squares. This is the variance of a random walk observed with
  noise (``a`` = twice the observation-noise variance, ``b`` = the walk's variance per unit time),
  which is exactly the variance of "target minus last value" the forecast needs, measured on the
  same kind of curves: the only assumption is "the future changes like the past did". Without any
  pair (every curve has one point) the std is :attr:`LastValueConfig.default_std`.
* :class:`PowerLawEnsemble` (``"power-law"``), after DPL (Kadra et al., 2023, "Scaling laws for
  hyperparameter optimization"): each target curve gets ``y(t) = c - a·t^(-α)`` (``α > 0``), fitted
  by least squares to its own points by an ensemble of members, each from its own random start of
  ``α`` and on a Bayesian-bootstrap reweighting of the points (exponential weights: they never
  drop a point, so a 3-point curve stays determined). For a fixed ``α`` the model is linear in
  ``(c, a)``, so those are solved in closed form (variable projection) and Adam only moves ``α``,
  with the profile's exact derivative: no ill-conditioned joint descent in ``(c, a, α)``, and all
  curves and members are one batched computation. The basis is written ``(t^(-α) - 1)/α``, which
  tends to ``-ln t`` as ``α → 0`` instead of becoming collinear with the constant. The forecast
  mean is the members' mean of their predictions clipped to [0, 1]; the variance is their spread
  plus the curve's mean squared residual (floored), so a curve the law does not fit gets a wide
  forecast, and the standard deviation is never below the :class:`LastValue` noise model's for
  the same gap (members fitted to a few early points agree with each other, which says nothing
  about the future: without this floor the real-curve log-likelihoods were -12 (TaskSet) and -53
  (LCDB)). Curves with fewer than 3 context points cannot determine 3 parameters and get the
  :class:`LastValue` forecast.
* :class:`GaussianProcess` (``"gp"``), after freeze-thaw GPs (Swersky et al., 2014) and DyHPO
  (Wistuba et al., 2022): one exact GP over (hyperparameters, time) for all curves of the task,
  with a constant mean and kernel ``s²·k_hp(λ, λ')·k_t(t, t') + σ²·[same point]``, where ``k_hp`` is
  Matérn-5/2 with one lengthscale per hyperparameter (``≡ 1`` without hyperparameters) and
  ``k_t(t, t') = β^α / (t + t' + β)^α`` is the freeze-thaw kernel of an infinite mixture of
  exponential decays. Curves with similar hyperparameters share information, which the two
  per-curve baselines cannot. The kernel hyperparameters (log-parametrised, boxed) maximise the
  marginal likelihood of a random subset of at most 400 context points (L-BFGS-B with the exact
  gradient, float64), because one Cholesky of all ~2000 points per step would cost ~100× more;
  the posterior then conditions on all context points (one Cholesky). The fit gets 20
  evaluations: on the development curves more raise the subset's likelihood, not the forecasts.

Shapes: ``N`` context points, ``C`` curves, ``D`` hyperparameters, ``M`` targets, ``E`` ensemble
members, ``S`` curves fitted by the power law, ``P`` their points, ``F`` points of the GP fit,
``U`` distinct context times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize, nnls
from torch import Tensor

from pfn.eval_tasks import EvalTask
from pfn.forecast import ForecastMethod, GaussianForecast

__all__ = [
    "BASELINES",
    "GPConfig",
    "GPHyperparameters",
    "GapNoise",
    "GaussianProcess",
    "LastValue",
    "LastValueConfig",
    "PowerLawConfig",
    "PowerLawEnsemble",
    "make_baseline",
]

# Fewest context points a curve needs for a power-law fit (three parameters).
_MIN_POWER_LAW_POINTS = 3
# Range of the power-law exponent α: below 0.01 the law is indistinguishable from c - b·ln t
# (which the basis reaches as α → 0), above 10 it is a step the data cannot tell from 10.
_ALPHA_RANGE = (1e-2, 10.0)
# Range of the members' initial α (uniform in log α): the exponents learning curves usually have.
_ALPHA_INIT_RANGE = (0.05, 2.0)
_LOG_2PI = math.log(2.0 * math.pi)


# ---- last value -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LastValueConfig:
    """Settings of :class:`LastValue`."""

    max_pairs: int = 20_000  # pairs of points used for the noise fit (a random subset beyond)
    default_std: float = 0.1  # std when the context has no pair of points of one curve
    min_std: float = 1e-3  # std floor: about a PFN bucket, so a flat curve is not a point mass
    seed: int = 0  # seed of the pair subset

    def __post_init__(self) -> None:
        if self.max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1, got {self.max_pairs}")
        if not (self.default_std > 0 and self.min_std > 0):
            raise ValueError(
                f"default_std and min_std must be positive, got {self.default_std}, {self.min_std}"
            )


@dataclass(frozen=True, kw_only=True)
class GapNoise:
    """The fitted variance of a curve's change over a time gap: ``var(g) = a + b·g``."""

    a: float  # variance at gap 0 (twice the observation-noise variance)
    b: float  # variance added per unit of time
    n_pairs: int  # pairs of points it was fitted on (0: the default, b = 0)

    def std(self, gap: np.ndarray) -> np.ndarray:
        """(M,) standard deviations of the change over ``gap`` (negative gaps count as 0)."""
        return np.sqrt(self.a + self.b * np.maximum(np.asarray(gap, dtype=np.float64), 0.0))


class LastValue(ForecastMethod):
    """Predict a curve's last observed score; the std grows with the gap (module docstring).

    A target curve without any context point gets the mean of the other curves' last values, with
    their variance added to the noise of a gap from t = 0.
    """

    name = "last-value"

    def __init__(self, config: LastValueConfig | None = None) -> None:
        self.config = config if config is not None else LastValueConfig()

    def fit_noise(self, task: EvalTask) -> GapNoise:
        """The noise model ``var(g) = a + b·g`` fitted on the pairs of ``task``'s context curves."""
        curve, t, y = _sorted_context(task)  # (N,) each, by curve then time
        n = curve.shape[0]
        # Points i < j of one curve: point i pairs with the `later[i]` points after it.
        curve_end = np.searchsorted(curve, curve, side="right")  # (N,) one past each curve's end
        later = curve_end - np.arange(n) - 1  # (N,)
        total = int(later.sum())
        if total == 0:
            return GapNoise(a=self.config.default_std**2, b=0.0, n_pairs=0)
        if total <= self.config.max_pairs:
            k = np.arange(total)
        else:  # uniform over all pairs, without enumerating them
            rng = np.random.default_rng(self.config.seed)
            k = rng.integers(0, total, size=self.config.max_pairs)
        cum = np.cumsum(later)  # pairs whose first point is <= i
        first = np.searchsorted(cum, k, side="right")  # (P,)
        second = first + 1 + k - (cum[first] - later[first])  # (P,)
        gap = t[second] - t[first]
        sq_change = (y[second] - y[first]) ** 2
        design = np.stack([np.ones_like(gap), gap], axis=1)  # (P, 2)
        (a, b), _ = nnls(design, sq_change)
        return GapNoise(a=float(a), b=float(b), n_pairs=int(k.shape[0]))

    def predict(self, task: EvalTask) -> GaussianForecast:
        noise = self.fit_noise(task)
        t_last, y_last = _last_points(task)  # (C,) each, NaN for curves without points
        seen = ~np.isnan(y_last)
        tc = task.target_curve
        loc = y_last[tc].copy()
        var = noise.std(task.target_t - t_last[tc]) ** 2
        unseen = ~seen[tc]
        if unseen.any():
            loc[unseen] = y_last[seen].mean()
            var[unseen] = y_last[seen].var() + noise.std(task.target_t[unseen]) ** 2
        scale = np.maximum(np.sqrt(var), self.config.min_std)
        return GaussianForecast(loc=loc, scale=scale)


def _sorted_context(task: EvalTask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(curve, t, y), each (N,), sorted by curve, then time."""
    order = np.lexsort((task.ctx_t, task.ctx_curve))
    return task.ctx_curve[order], task.ctx_t[order], task.ctx_y[order]


def _last_points(task: EvalTask) -> tuple[np.ndarray, np.ndarray]:
    """(t, y) of each curve's latest context point, each (C,); NaN for a curve without one."""
    curve, t, y = _sorted_context(task)
    t_last = np.full(task.n_curves, np.nan)
    y_last = np.full(task.n_curves, np.nan)
    is_last = np.append(curve[1:] != curve[:-1], True) if curve.size else np.zeros(0, bool)
    t_last[curve[is_last]] = t[is_last]
    y_last[curve[is_last]] = y[is_last]
    return t_last, y_last


# ---- power-law ensemble -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PowerLawConfig:
    """Settings of :class:`PowerLawEnsemble`."""

    n_members: int = 10  # E, fits per curve (random start of α, bootstrap weights)
    steps: int = 200  # Adam steps on α (cosine-decayed learning rate)
    lr: float = 0.1  # peak learning rate on the logit of log α
    min_residual_std: float = 5e-3  # floor of a curve's residual std (a 3-point fit is exact)
    seed: int = 0  # seed of the starts and weights (and of the short curves' LastValue)

    def __post_init__(self) -> None:
        if self.n_members < 1 or self.steps < 0:
            raise ValueError(
                f"n_members must be >= 1 and steps >= 0, got {self.n_members}, {self.steps}"
            )
        if not (self.lr > 0 and self.min_residual_std > 0):
            raise ValueError(
                f"lr and min_residual_std must be positive, got {self.lr}, {self.min_residual_std}"
            )


@dataclass(frozen=True, kw_only=True)
class _PowerLawFit:
    """Fitted members, as tensors: ``y(t) = level + slope·(t^(-alpha) - 1)/alpha``."""

    level: Tensor  # (S, E) value at t = 1 (c - a)
    slope: Tensor  # (S, E) -a·alpha
    alpha: Tensor  # (S, E)
    residual_var: Tensor  # (S,) mean squared residual over points and members


class PowerLawEnsemble(ForecastMethod):
    """Per-curve power laws ``c - a·t^(-α)`` fitted by an ensemble (module docstring).

    Targets of curves with fewer than 3 context points get exactly the forecast of
    ``LastValue(LastValueConfig(seed=config.seed))``.
    """

    name = "power-law"

    def __init__(self, config: PowerLawConfig | None = None) -> None:
        self.config = config if config is not None else PowerLawConfig()
        self._fallback = LastValue(LastValueConfig(seed=self.config.seed))

    def predict(self, task: EvalTask) -> GaussianForecast:
        fallback = self._fallback.predict(task)
        loc, scale = fallback.loc.copy(), fallback.scale.copy()
        counts = np.bincount(task.ctx_curve, minlength=task.n_curves)  # (C,)
        fitted = counts[task.target_curve] >= _MIN_POWER_LAW_POINTS  # (M,)
        if not fitted.any():
            return fallback
        curves = np.unique(task.target_curve[fitted])  # (S,)
        slot_of = np.full(task.n_curves, -1)
        slot_of[curves] = np.arange(curves.shape[0])
        keep = slot_of[task.ctx_curve] >= 0  # (N,) points of fitted curves
        slot = torch.as_tensor(slot_of[task.ctx_curve[keep]])  # (P,)
        t = torch.as_tensor(task.ctx_t[keep], dtype=torch.float64)
        y = torch.as_tensor(task.ctx_y[keep], dtype=torch.float64)
        fit = self._fit(t, y, slot, curves.shape[0])

        target_slot = torch.as_tensor(slot_of[task.target_curve[fitted]])  # (M',)
        log_t = torch.as_tensor(task.target_t[fitted], dtype=torch.float64).log().unsqueeze(1)
        alpha = fit.alpha[target_slot]  # (M', E)
        pred = fit.level[target_slot] + fit.slope[target_slot] * _basis(alpha, log_t)
        pred = pred.clamp(0.0, 1.0)  # (M', E)
        var = pred.var(dim=1, unbiased=False) + fit.residual_var[target_slot]
        loc[fitted] = pred.mean(dim=1).numpy()
        # Never narrower than the last-value noise model over the same gap: a law fitted to a few
        # early points agrees with itself across members, which says nothing about where the
        # curve goes (on real curves the ensemble spread alone gave log-likelihoods of -12 to -53).
        scale[fitted] = np.maximum(var.sqrt().numpy(), fallback.scale[fitted])
        return GaussianForecast(loc=loc, scale=scale)

    def _fit(self, t: Tensor, y: Tensor, slot: Tensor, n_slots: int) -> _PowerLawFit:
        """Fit E members to the points ``(t, y)`` (P,) of curves ``slot`` (P,) in [0, S)."""
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        weight = torch.empty(t.shape[0], cfg.n_members, dtype=torch.float64)
        weight.exponential_(generator=gen)  # (P, E) Bayesian bootstrap
        points = _WeightedPoints.of(t, y, weight, slot, n_slots)
        lo, hi = math.log(_ALPHA_RANGE[0]), math.log(_ALPHA_RANGE[1])
        init_lo, init_hi = (math.log(v) for v in _ALPHA_INIT_RANGE)
        u = torch.rand(n_slots, cfg.n_members, dtype=torch.float64, generator=gen)
        log_alpha0 = init_lo + u * (init_hi - init_lo)  # (S, E)
        # Adam on z = logit of log α's position in _ALPHA_RANGE (a smooth bounded α), with the
        # analytic gradient: autograd would cost 3× as much per step for the same numbers.
        z = torch.logit((log_alpha0 - lo) / (hi - lo))  # (S, E)
        m, v = torch.zeros_like(z), torch.zeros_like(z)
        beta1, beta2 = 0.9, 0.999
        for step in range(cfg.steps):
            sig = torch.sigmoid(z)
            alpha = torch.exp(lo + (hi - lo) * sig)
            grad = points.profile(alpha).d_sse * alpha * (hi - lo) * sig * (1.0 - sig)  # dSSE/dz
            m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            lr = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))  # cosine decay
            m_hat = m / (1.0 - beta1 ** (step + 1))
            v_hat = v / (1.0 - beta2 ** (step + 1))
            z = z - lr * m_hat / (v_hat.sqrt() + 1e-12)
        alpha = torch.exp(lo + (hi - lo) * torch.sigmoid(z))
        profile = points.profile(alpha)
        level_p, slope_p = profile.level.index_select(0, slot), profile.slope.index_select(0, slot)
        pred = level_p + slope_p * _basis(alpha.index_select(0, slot), points.log_t)  # (P, E)
        counts = torch.bincount(slot, minlength=n_slots).to(torch.float64)  # (S,)
        mse = _segment_sum((points.y - pred) ** 2, slot, n_slots) / counts.unsqueeze(1)  # (S, E)
        residual_var = mse.mean(dim=1).clamp_min(cfg.min_residual_std**2)
        return _PowerLawFit(
            level=profile.level, slope=profile.slope, alpha=alpha, residual_var=residual_var
        )


@dataclass(frozen=True, kw_only=True)
class _Profile:
    """The least-squares fit of ``y = level + slope·φ_α(t)`` for fixed α, per curve and member."""

    level: Tensor  # (S, E)
    slope: Tensor  # (S, E)
    sse: Tensor  # (S, E) weighted sum of squared residuals
    d_sse: Tensor  # (S, E) its derivative with respect to α (level and slope at their optimum)


@dataclass(frozen=True, kw_only=True)
class _WeightedPoints:
    """The points of S curves with E sets of weights, and their sums that do not depend on α."""

    log_t: Tensor  # (P, 1)
    y: Tensor  # (P, 1)
    weight: Tensor  # (P, E)
    slot: Tensor  # (P,) curve of each point, in [0, S)
    s_w: Tensor  # (S, E) Σw
    s_y: Tensor  # (S, E) Σwy
    syy: Tensor  # (S, E) centred Σwy²

    @classmethod
    def of(
        cls, t: Tensor, y: Tensor, weight: Tensor, slot: Tensor, n_slots: int
    ) -> _WeightedPoints:
        """From times and scores (P,), weights (P, E) and curves (P,) in [0, S)."""
        y = y.unsqueeze(1)
        s_w, s_y, s_yy = _segment_sum(
            torch.cat([weight, weight * y, weight * y**2], dim=1), slot, n_slots
        ).chunk(3, dim=1)
        return cls(
            log_t=t.log().unsqueeze(1),
            y=y,
            weight=weight,
            slot=slot,
            s_w=s_w,
            s_y=s_y,
            syy=s_yy - s_y**2 / s_w,
        )

    def profile(self, alpha: Tensor) -> _Profile:
        """The best (level, slope) for ``alpha`` (S, E), with the SSE and its derivative.

        With centred weighted sums ``Sxx = Σw(φ-φ̄)²`` and ``Sxy = Σw(φ-φ̄)(y-ȳ)``, the best slope
        is ``Sxy/Sxx`` and ``SSE = Syy - Sxy²/Sxx``, so ``dSSE/dα = slope²·dSxx - 2·slope·dSxy``
        by the quotient rule, with ``dφ/dα = -(ln t·t^(-α) + φ)/α``.
        """
        alpha_p = alpha.index_select(0, self.slot)  # (P, E)
        power = torch.exp(-alpha_p * self.log_t)  # (P, E) t^(-α)
        phi = (power - 1.0) / alpha_p  # absolute error ~1e-16·t^(-α)/α: no need for expm1
        d_phi = -(self.log_t * power + phi) / alpha_p
        wphi, wdphi = self.weight * phi, self.weight * d_phi
        columns = torch.cat(
            [wphi, wphi * phi, wphi * self.y, wdphi, wdphi * phi, wdphi * self.y], 1
        )
        sums = _segment_sum(columns, self.slot, self.s_w.shape[0]).chunk(6, dim=1)
        s_phi, s_phiphi, s_phiy, s_dphi, s_dphiphi, s_dphiy = sums  # (S, E) each
        sxx = s_phiphi - s_phi**2 / self.s_w
        sxy = s_phiy - s_phi * self.s_y / self.s_w
        d_sxx = 2.0 * (s_dphiphi - s_phi * s_dphi / self.s_w)
        d_sxy = s_dphiy - s_dphi * self.s_y / self.s_w
        slope = sxy / (sxx + 1e-12)  # 0 for a curve whose points share one time
        return _Profile(
            level=(self.s_y - slope * s_phi) / self.s_w,
            slope=slope,
            sse=self.syy - slope * sxy,
            d_sse=slope**2 * d_sxx - 2.0 * slope * d_sxy,
        )


def _basis(alpha: Tensor, log_t: Tensor) -> Tensor:
    """``(t^(-α) - 1)/α``, which is ``-ln t`` at α → 0 (shapes broadcast)."""
    return torch.expm1(-alpha * log_t) / alpha


def _segment_sum(x: Tensor, segment: Tensor, n_segments: int) -> Tensor:
    """(S, R) sums of x (P, R) over the points of each segment (``segment``: (P,) in [0, S))."""
    out = torch.zeros(n_segments, x.shape[1], dtype=x.dtype)
    return out.index_add(0, segment, x)


# ---- Gaussian process -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GPConfig:
    """Settings of :class:`GaussianProcess`."""

    max_fit_points: int = 400  # F, context points whose marginal likelihood is maximised
    fit_evals: int = 20  # L-BFGS-B budget of NLL evaluations (one (F, F) Cholesky + inverse each)
    # Floor of σ² (σ >= 0.003 in score units): keeps K well conditioned, and stops runs that
    # sit flat at one value (TaskSet's at ln 2) from collapsing σ² to a point mass.
    min_noise_var: float = 1e-5
    seed: int = 0  # seed of the fit subset

    def __post_init__(self) -> None:
        if self.max_fit_points < 1 or self.fit_evals < 0:
            raise ValueError(
                f"max_fit_points must be >= 1 and fit_evals >= 0, got {self.max_fit_points}, "
                f"{self.fit_evals}"
            )
        if not self.min_noise_var > 0:
            raise ValueError(f"min_noise_var must be positive, got {self.min_noise_var}")


@dataclass(frozen=True, kw_only=True)
class GPHyperparameters:
    """GP hyperparameters (see the module docstring for the kernel)."""

    mean: float  # constant prior mean
    outputscale: float  # s²
    lengthscales: tuple[float, ...]  # (D,) Matérn lengthscales, one per hyperparameter
    alpha: float  # α of k_t
    beta: float  # β of k_t
    noise_var: float  # σ²


# Bounds of the fitted hyperparameters: s², α, β, σ² (less the floor), lengthscales, mean. Wide
# enough for any curve set in score units; they keep K finite and the optimiser out of flat
# regions (a lengthscale of 100 is already "this hyperparameter does not matter").
_GP_BOUNDS = {
    "outputscale": (1e-6, 10.0),
    "alpha": (1e-2, 10.0),
    "beta": (1e-3, 10.0),
    "noise_var": (1e-8, 1.0),
    "lengthscale": (1e-2, 100.0),
    "mean": (-1.0, 2.0),
}


class GaussianProcess(ForecastMethod):
    """An exact GP over (hyperparameters, time) with the freeze-thaw kernel (module docstring).

    The fit minimises the negative log marginal likelihood by L-BFGS-B (box bounds on the log
    hyperparameters) with its exact gradient ``½·tr((K⁻¹ - aaᵀ)·∂K)``, ``a = K⁻¹(y - m)``, written
    out per hyperparameter: every step costs one Cholesky and one inverse of an (F, F) matrix.
    """

    name = "gp"

    def __init__(self, config: GPConfig | None = None) -> None:
        self.config = config if config is not None else GPConfig()

    def fit(self, task: EvalTask) -> GPHyperparameters:
        """Maximise the marginal likelihood of a random subset of ``task``'s context.

        The start (returned as is when ``fit_evals = 0``): mean and variance of the subset's
        scores as mean and s², 1% of that variance as σ², α = 1, β = 0.5, lengthscales 0.5.
        """
        cfg = self.config
        n = task.ctx_y.shape[0]
        subset = np.arange(n)
        if n > cfg.max_fit_points:
            rng = np.random.default_rng(cfg.seed)
            subset = np.sort(rng.choice(n, size=cfg.max_fit_points, replace=False))  # (F,)
        data = _GPData.of(task, subset)
        y = data.y.numpy()
        var_y = max(float(y.var()), 1e-4)
        n_dims = task.configs.shape[1]
        # Start: the data's variance as signal, 1% of it as noise, lengthscales half the unit box.
        start = _pack_theta(
            GPHyperparameters(
                mean=float(y.mean()),
                outputscale=var_y,
                lengthscales=(0.5,) * n_dims,
                alpha=1.0,
                beta=0.5,
                noise_var=0.01 * var_y,
            ),
            cfg.min_noise_var,
        )
        if cfg.fit_evals == 0:
            return _unpack_theta(start, n_dims, cfg.min_noise_var)
        result = minimize(
            lambda theta: _gp_nll_and_grad(theta, data, cfg.min_noise_var),
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=_theta_bounds(n_dims),
            options={"maxiter": cfg.fit_evals, "maxfun": cfg.fit_evals},
        )
        return _unpack_theta(result.x, n_dims, cfg.min_noise_var)

    def predict(self, task: EvalTask) -> GaussianForecast:
        return self.posterior(task, self.fit(task))

    def posterior(self, task: EvalTask, hp: GPHyperparameters) -> GaussianForecast:
        """The GP with hyperparameters ``hp`` conditioned on all of ``task``'s context points.

        Raises:
            ValueError: ``hp`` has a lengthscale count other than ``task``'s D.
        """
        if len(hp.lengthscales) != task.configs.shape[1]:
            raise ValueError(
                f"hp has {len(hp.lengthscales)} lengthscales, the task {task.configs.shape[1]} "
                "hyperparameters"
            )
        data = _GPData.of(task, np.arange(task.ctx_y.shape[0]))  # all N points
        k_hp, _ = _matern52(hp, data)  # (C, C)
        k = _expand(hp.outputscale * _time_kernel(hp, data.times, data.times), data.time_index)
        if data.configs.shape[1]:
            k.mul_(_expand(k_hp, data.curve))
        k.diagonal().add_(hp.noise_var)  # (N, N)
        chol = _cholesky(k)
        q_curve = torch.as_tensor(task.target_curve)  # (M,)
        q_t = torch.as_tensor(task.target_t, dtype=torch.float64)
        k_t_cross = _time_kernel(hp, data.times, q_t).index_select(0, data.time_index)  # (N, M)
        k_hp_cross = k_hp.index_select(1, q_curve).index_select(0, data.curve)  # (N, M)
        k_cross = hp.outputscale * k_t_cross * k_hp_cross
        weights = torch.cholesky_solve((data.y - hp.mean).unsqueeze(1), chol)  # (N, 1)
        loc = hp.mean + (k_cross * weights).sum(dim=0)  # (M,)
        v = torch.linalg.solve_triangular(chol, k_cross, upper=False)  # (N, M)
        prior_var = hp.outputscale * _time_kernel(hp, q_t, q_t).diagonal()  # (M,)
        var = (prior_var - (v**2).sum(dim=0)).clamp_min(0.0) + hp.noise_var
        return GaussianForecast(loc=loc.numpy(), scale=var.sqrt().numpy())


@dataclass(frozen=True, kw_only=True)
class _GPData:
    """Context points of a GP, indexed into their curves and distinct times.

    The kernel is a product of a (C, C) factor over curves and a (U, U) factor over the U <= n
    distinct times (recorded curves share a time grid): both are computed small and looked up per
    point, cheaper than evaluating them on every pair of points.
    """

    configs: Tensor  # (C, D)
    sq_dist: Tensor  # (C, C, D) squared config differences per dimension
    times: Tensor  # (U,) distinct context times
    curve: Tensor  # (n,) curve of each point
    time_index: Tensor  # (n,) index into `times` of each point
    y: Tensor  # (n,)

    @classmethod
    def of(cls, task: EvalTask, points: np.ndarray) -> _GPData:
        """The context points ``points`` (indices into ``task.ctx_*``)."""
        configs = torch.as_tensor(task.configs, dtype=torch.float64)
        times, time_index = np.unique(task.ctx_t[points], return_inverse=True)
        return cls(
            configs=configs,
            sq_dist=(configs.unsqueeze(1) - configs.unsqueeze(0)) ** 2,
            times=torch.as_tensor(times, dtype=torch.float64),
            curve=torch.as_tensor(task.ctx_curve[points]),
            time_index=torch.as_tensor(time_index.reshape(-1)),
            y=torch.as_tensor(task.ctx_y[points], dtype=torch.float64),
        )


# The optimiser's vector θ: log s², log α, log β, log(σ² - floor), log ℓ_1..D, mean.


def _pack_theta(hp: GPHyperparameters, min_noise_var: float) -> np.ndarray:
    """θ of ``hp``."""
    logs = [hp.outputscale, hp.alpha, hp.beta, max(hp.noise_var - min_noise_var, 1e-8)]
    return np.array([*np.log(logs), *np.log(hp.lengthscales), hp.mean])


def _unpack_theta(theta: np.ndarray, n_dims: int, min_noise_var: float) -> GPHyperparameters:
    """The hyperparameters of ``theta``."""
    p = np.exp(theta[:-1])
    return GPHyperparameters(
        mean=float(theta[-1]),
        outputscale=float(p[0]),
        lengthscales=tuple(float(v) for v in p[4 : 4 + n_dims]),
        alpha=float(p[1]),
        beta=float(p[2]),
        noise_var=float(p[3]) + min_noise_var,
    )


def _theta_bounds(n_dims: int) -> list[tuple[float, float]]:
    """Box bounds of θ (from _GP_BOUNDS)."""
    names = ["outputscale", "alpha", "beta", "noise_var"] + ["lengthscale"] * n_dims
    log_bounds = [(math.log(_GP_BOUNDS[name][0]), math.log(_GP_BOUNDS[name][1])) for name in names]
    return [*log_bounds, _GP_BOUNDS["mean"]]


def _matern52(hp: GPHyperparameters, data: _GPData) -> tuple[Tensor, Tensor]:
    """(C, C) Matérn-5/2 between the curves' configs, and (C, C) ``w`` with ``dk/d log ℓ_d =
    w·Δ_d²/ℓ_d²``, ``w = (5/3)(1 + √5 d) e^(-√5 d)`` (no division by the distance d)."""
    n_curves, n_dims = data.configs.shape
    if n_dims == 0:
        ones = torch.ones(n_curves, n_curves, dtype=torch.float64)
        return ones, torch.zeros(n_curves, n_curves, dtype=torch.float64)
    inv_sq = torch.tensor(hp.lengthscales, dtype=torch.float64) ** -2  # (D,)
    r = torch.sqrt(5.0 * (data.sq_dist @ inv_sq))  # (C, C) √5·distance
    decay = torch.exp(-r)
    return (1.0 + r + r**2 / 3.0) * decay, (5.0 / 3.0) * (1.0 + r) * decay


def _time_kernel(hp: GPHyperparameters, t1: Tensor, t2: Tensor) -> Tensor:
    """(n1, n2) freeze-thaw ``β^α / (t + t' + β)^α``."""
    shift = t1.unsqueeze(1) + t2.unsqueeze(0) + hp.beta
    return torch.exp(hp.alpha * (math.log(hp.beta) - shift.log()))


def _expand(small: Tensor, index: Tensor) -> Tensor:
    """(n, n) ``small[index[i], index[j]]`` of a (K, K) matrix."""
    return small.index_select(1, index).index_select(0, index)  # row gathers: the fast way


def _block_sum(x: Tensor, index: Tensor, size: int) -> Tensor:
    """(K, K) sums of a symmetric (n, n) ``x`` over the blocks ``index[i], index[j]``."""
    rows = torch.zeros(size, x.shape[1], dtype=x.dtype).index_add_(0, index, x)  # (K, n)
    return torch.zeros(size, size, dtype=x.dtype).index_add_(0, index, rows.T).T


def _gp_nll_and_grad(
    theta: np.ndarray, data: _GPData, min_noise_var: float
) -> tuple[float, np.ndarray]:
    """Negative log marginal likelihood per point and its gradient by ``theta`` (see _pack_theta).

    With ``G = dNLL/dK = (K⁻¹ - aaᵀ)/2``, ``a = K⁻¹(y - m)``, every derivative is ``Σ G ⊙ dK/dθ``
    and ``dK/dθ`` is the signal kernel times a factor that depends on the curves or the times
    only, so the sums reduce to the (C, C) and (U, U) block sums of ``G ⊙ K_signal``.
    """
    n_curves, n_dims = data.configs.shape
    n = data.y.shape[0]
    hp = _unpack_theta(theta, n_dims, min_noise_var)
    k_hp, w_hp = _matern52(hp, data)  # (C, C) each
    shift = data.times.unsqueeze(1) + data.times.unsqueeze(0) + hp.beta  # (U, U) t + t' + β
    log_shift = shift.log()
    k_t = hp.outputscale * torch.exp(hp.alpha * (math.log(hp.beta) - log_shift))  # (U, U), ×s²
    k_t_points = _expand(k_t, data.time_index)  # (F, F)
    k_hp_points = _expand(k_hp, data.curve) if n_dims else None
    k = k_t_points * k_hp_points if n_dims else k_t_points.clone()  # (F, F) signal
    k.diagonal().add_(hp.noise_var)
    chol = _cholesky(k)
    resid = (data.y - hp.mean).unsqueeze(1)  # (F, 1)
    a = torch.cholesky_solve(resid, chol)  # (F, 1)
    nll = 0.5 * float(resid.T @ a) + float(chol.diagonal().log().sum()) + 0.5 * n * _LOG_2PI

    g = torch.cholesky_inverse(chol)
    g.sub_(a * a.T).mul_(0.5)  # (F, F) dNLL/dK
    grad = np.empty_like(theta)
    g_t = g * k_t_points  # (F, F) G ⊙ s²k_t
    if n_dims:
        # dK/d log ℓ_d = s²k_t ⊙ dk_hp/d log ℓ_d: block sums of G ⊙ s²k_t over curve pairs.
        g_curves = _block_sum(g_t, data.curve, n_curves) * w_hp  # (C, C)
        d_ls = g_curves.reshape(-1) @ data.sq_dist.reshape(-1, n_dims)  # (D,)
        grad[4 : 4 + n_dims] = (
            d_ls * torch.tensor(hp.lengthscales, dtype=torch.float64) ** -2
        ).numpy()
        e = g_t.mul_(k_hp_points)  # (F, F) G ⊙ K_signal, in place
    else:
        e = g_t
    e_times = _block_sum(e, data.time_index, data.times.shape[0])  # (U, U)
    e_sum = float(e_times.sum())
    grad[0] = e_sum  # log s²: dK/d log s² = K_signal
    # log α: dK/dα = K_signal·(log β - log(t + t' + β))
    grad[1] = hp.alpha * (math.log(hp.beta) * e_sum - float((e_times * log_shift).sum()))
    # log β: dK/dβ = K_signal·α·(1/β - 1/(t + t' + β))
    grad[2] = hp.alpha * (e_sum - hp.beta * float((e_times / shift).sum()))
    grad[3] = (hp.noise_var - min_noise_var) * float(g.diagonal().sum())  # log(σ² - floor)
    grad[-1] = -float(a.sum())  # mean
    return nll / n, grad / n


def _cholesky(k: Tensor) -> Tensor:
    """Lower Cholesky factor of ``k``, adding jitter (1e-8 up to 1e-2 times the mean diagonal)."""
    chol, info = torch.linalg.cholesky_ex(k)
    if int(info) == 0:
        return chol
    scale = float(k.diagonal().mean())
    eye = torch.eye(k.shape[0], dtype=k.dtype)
    for exponent in range(-8, -1):
        chol, info = torch.linalg.cholesky_ex(k + scale * 10.0**exponent * eye)
        if int(info) == 0:
            return chol
    raise RuntimeError("GP kernel matrix is not positive definite even with jitter")


# ---- registry -------------------------------------------------------------------------------


BASELINES: dict[str, type[ForecastMethod]] = {
    LastValue.name: LastValue,
    PowerLawEnsemble.name: PowerLawEnsemble,
    GaussianProcess.name: GaussianProcess,
}


def make_baseline(name: str) -> ForecastMethod:
    """The baseline called ``name`` (a key of :data:`BASELINES`) with its default config.

    Raises:
        ValueError: unknown name.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    return BASELINES[name]()
