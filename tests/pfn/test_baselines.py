"""Tests for pfn/baselines.py on small tasks built by hand.

The hand example for last-value: one curve with points (t, y) = (0.1, 0.2), (0.2, 0.4), (0.3, 0.5)
has the pairs (gap, change²) = (0.1, 0.04), (0.2, 0.09), (0.1, 0.01). Unconstrained least squares
of change² on [1, gap] gives a = -0.04 < 0, so non-negative least squares puts a = 0 and
b = Σ g·r² / Σ g² = 0.023 / 0.06 = 0.38333...
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.optimize import approx_fprime

from pfn.baselines import (
    BASELINES,
    GaussianProcess,
    GPConfig,
    GPHyperparameters,
    LastValue,
    LastValueConfig,
    PowerLawConfig,
    PowerLawEnsemble,
    _gp_nll_and_grad,
    _GPData,
    _pack_theta,
    _WeightedPoints,
    make_baseline,
)
from pfn.eval_tasks import EvalTask
from pfn.forecast import ForecastMethod, GaussianForecast
from pfn.scaling import MetricScaler

IDENTITY = MetricScaler(
    higher_is_better=True, worst=0.0, best=1.0, worst_is_bound=True, best_is_bound=True
)


def make_task(
    curves: list[tuple[np.ndarray, np.ndarray]],
    *,
    configs: np.ndarray | None = None,
    target_curve: np.ndarray | None = None,
    target_t: np.ndarray | None = None,
    target_y: np.ndarray | None = None,
) -> EvalTask:
    """A task with the context points ``curves[c] = (t, y)``; by default every curve is a target
    at t = 1 with an unknown (NaN) value, and there are no hyperparameters (D = 0)."""
    n_curves = len(curves)
    configs = np.zeros((n_curves, 0)) if configs is None else np.asarray(configs, dtype=float)
    target_curve = np.arange(n_curves) if target_curve is None else np.asarray(target_curve)
    target_t = np.ones(target_curve.shape[0]) if target_t is None else np.asarray(target_t)
    target_y = np.full(target_curve.shape[0], np.nan) if target_y is None else target_y
    ctx_curve = np.concatenate([np.full(len(t), c) for c, (t, _) in enumerate(curves)])
    return EvalTask(
        table="hand",
        seed=0,
        n_context=int(ctx_curve.shape[0]),
        rows=np.arange(n_curves),
        configs=configs,
        ctx_curve=ctx_curve.astype(int),
        ctx_t=np.concatenate([np.asarray(t, dtype=float) for t, _ in curves]),
        ctx_y=np.concatenate([np.asarray(y, dtype=float) for _, y in curves]),
        target_curve=target_curve.astype(int),
        target_t=target_t.astype(float),
        target_y=np.asarray(target_y, dtype=float),
        scaler=IDENTITY,
    )


def smooth_task(seed: int = 0, n_curves: int = 16, n_dims: int = 1) -> EvalTask:
    """Curves ``y = f(λ) - 0.2·(1 - t)²`` with a smooth final value ``f(λ) = 0.5 + 0.3·sin(3λ₀)``,
    observed with noise 0.005 on t = 0.05, 0.10, ... up to a random prefix; targets: f(λ)."""
    rng = np.random.default_rng(seed)
    configs = rng.random((n_curves, n_dims))
    final = 0.5 + 0.3 * np.sin(3.0 * configs[:, 0])
    curves = []
    for c in range(n_curves):
        t = np.arange(1, rng.integers(2, 16)) / 20.0
        y = final[c] - 0.2 * (1.0 - t) ** 2 + 0.005 * rng.standard_normal(t.shape[0])
        curves.append((t, y))
    return make_task(curves, configs=configs, target_y=final)


def random_walk_task(seed: int, *, n_curves: int, n_points: int, sigma: float, q: float):
    """Random walks with variance q per unit time (from 0.5), observed with noise sigma."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, n_points + 1) / (n_points + 1)
    steps = rng.normal(0.0, np.sqrt(q * np.diff(t, prepend=0.0)), (n_curves, n_points))
    y = 0.5 + np.cumsum(steps, axis=1) + rng.normal(0.0, sigma, (n_curves, n_points))
    return make_task([(t, y[c]) for c in range(n_curves)])


# ---- registry and configs ------------------------------------------------------------------


def test_registry_names():
    assert list(BASELINES) == ["last-value", "power-law", "gp"]
    for name, cls in BASELINES.items():
        method = make_baseline(name)
        assert isinstance(method, cls) and isinstance(method, ForecastMethod)
        assert method.name == name


def test_make_baseline_unknown():
    with pytest.raises(ValueError, match="last-value, power-law, gp"):
        make_baseline("pfn")


@pytest.mark.parametrize(
    "config", [LastValueConfig(max_pairs=7), PowerLawConfig(n_members=3), GPConfig(fit_evals=5)]
)
def test_config_round_trip(config):
    assert type(config)(**asdict(config)) == config


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (LastValueConfig, {"max_pairs": 0}, "max_pairs"),
        (LastValueConfig, {"default_std": 0.0}, "default_std"),
        (PowerLawConfig, {"n_members": 0}, "n_members"),
        (PowerLawConfig, {"lr": -1.0}, "lr"),
        (GPConfig, {"max_fit_points": 0}, "max_fit_points"),
        (GPConfig, {"min_noise_var": 0.0}, "min_noise_var"),
    ],
)
def test_config_invalid(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


# ---- last value ------------------------------------------------------------------------------


def test_last_value_mean_is_last_observation():
    # Points out of time order: the last value is the one at the largest t, not the last listed.
    task = make_task([([0.3, 0.1, 0.2], [0.5, 0.2, 0.4]), ([0.4], [0.7]), ([0.2, 0.6], [0.9, 0.8])])
    forecast = LastValue().predict(task)
    np.testing.assert_array_equal(forecast.loc, [0.5, 0.7, 0.8])


def test_last_value_noise_fit_by_hand():
    task = make_task([([0.1, 0.2, 0.3], [0.2, 0.4, 0.5]), ([0.5], [0.6])])
    noise = LastValue().fit_noise(task)
    assert noise.n_pairs == 3  # the one-point curve has no pair
    assert noise.a == pytest.approx(0.0, abs=1e-12)
    assert noise.b == pytest.approx(0.023 / 0.06, rel=1e-9)
    forecast = LastValue().predict(task)
    np.testing.assert_allclose(
        forecast.scale, np.sqrt(0.023 / 0.06 * np.array([0.7, 0.5])), rtol=1e-9
    )


def test_last_value_std_grows_with_gap():
    task = random_walk_task(0, n_curves=50, n_points=10, sigma=0.03, q=0.01)
    gaps = np.array([0.0, 0.1, 0.3, 0.6])
    last_t = 10 / 11
    task = make_task(
        [task.curve_points(c) for c in range(task.n_curves)],
        target_curve=np.zeros(4, dtype=int),
        target_t=last_t + gaps,
    )
    forecast = LastValue().predict(task)
    noise = LastValue().fit_noise(task)
    assert noise.a > 0 and noise.b > 0
    assert np.all(np.diff(forecast.scale) > 0)
    np.testing.assert_allclose(forecast.scale, np.sqrt(noise.a + noise.b * gaps), rtol=1e-9)


@pytest.mark.parametrize("max_pairs", [20_000, 10**9])  # subsampled (87 000 pairs) and all
def test_last_value_recovers_random_walk_noise(max_pairs):
    # E[(y_j - y_i)²] = 2σ² + q·gap: a = 2·0.02² = 8e-4, b = q = 0.01.
    task = random_walk_task(1, n_curves=200, n_points=30, sigma=0.02, q=0.01)
    noise = LastValue(LastValueConfig(max_pairs=max_pairs)).fit_noise(task)
    assert noise.n_pairs == min(max_pairs, 200 * 30 * 29 // 2)
    assert noise.a == pytest.approx(8e-4, rel=0.35)
    assert noise.b == pytest.approx(0.01, rel=0.2)


def test_last_value_without_pairs_uses_default_std():
    task = make_task([([0.2], [0.3]), ([0.5], [0.6])])
    forecast = LastValue(LastValueConfig(default_std=0.07)).predict(task)
    np.testing.assert_array_equal(forecast.loc, [0.3, 0.6])
    np.testing.assert_allclose(forecast.scale, [0.07, 0.07])


def test_last_value_unseen_curve():
    # Curve 2 has no context point: the mean of the others' last values (0.4, 0.8), with their
    # variance (0.04) added to the noise of a gap from t = 0 to the target's t = 1.
    task = make_task([([0.1, 0.5], [0.2, 0.4]), ([0.1, 0.5], [0.5, 0.8]), ([], [])])
    forecast = LastValue().predict(task)
    noise = LastValue().fit_noise(task)
    assert forecast.loc[2] == pytest.approx(0.6)
    assert forecast.scale[2] ** 2 == pytest.approx(0.04 + noise.a + noise.b, rel=1e-9)


# ---- power law ------------------------------------------------------------------------------

# (c, a, α) of noiseless curves y = c - a·t^(-α), observed on t in [0.1, 0.5].
POWER_LAWS = [(0.8, 0.1, 0.5), (0.9, 0.2, 0.3), (0.7, 0.05, 1.0), (0.6, -0.02, 0.7)]


def power_law_task() -> EvalTask:
    t = np.linspace(0.1, 0.5, 9)
    curves = [(t, c - a * t**-alpha) for c, a, alpha in POWER_LAWS]
    final = np.array([c - a for c, a, _ in POWER_LAWS])
    assert all(0.0 <= y.min() and y.max() <= 1.0 for _, y in curves)
    return make_task(curves, target_y=final)


def test_power_law_extrapolates_noiseless_curves():
    task = power_law_task()
    forecast = PowerLawEnsemble().predict(task)
    error = np.abs(forecast.loc - task.target_y)  # the ensemble's mean (before truncation)
    last_value = LastValue().predict(task)
    last_value_error = np.abs(last_value.loc - task.target_y)
    assert error.max() < 0.02
    assert np.all(error < last_value_error)
    # The members agree on an exact law (no spread, the residual std at its floor), so the std is
    # the last-value noise model's over the same gap.
    floor = np.maximum(PowerLawConfig().min_residual_std, last_value.scale)
    np.testing.assert_allclose(forecast.scale, floor, rtol=1e-3)


def test_power_law_noise_widens_forecast():
    task = power_law_task()
    t, y = task.curve_points(0)
    noisy = y + np.random.default_rng(0).normal(0.0, 0.03, y.shape[0])
    noisy_task = make_task([(t, y), (t, noisy)])
    method = PowerLawEnsemble()
    fit = method._fit(
        torch.as_tensor(noisy_task.ctx_t),
        torch.as_tensor(noisy_task.ctx_y),
        torch.as_tensor(noisy_task.ctx_curve),
        2,
    )
    assert fit.residual_var[1] > 4.0 * fit.residual_var[0]
    forecast = method.predict(noisy_task)
    assert forecast.scale[1] >= forecast.scale[0]


def test_power_law_combines_members():
    # At t = 1 a member predicts its level: mean of the clipped levels, variance = their spread
    # plus the residual variance. Curve 1 is -0.2 + 0.15·t^(-0.5): 0.27 at t = 0.1, -0.05 at 1.
    t = np.linspace(0.1, 0.5, 9)
    rng = np.random.default_rng(1)
    task = make_task(
        [(t, 0.8 - 0.1 * t**-0.5 + rng.normal(0.0, 0.05, 9)), (t, -0.2 + 0.15 * t**-0.5)]
    )
    method = PowerLawEnsemble(PowerLawConfig(n_members=6))
    forecast = method.predict(task)
    fit = method._fit(
        torch.as_tensor(task.ctx_t), torch.as_tensor(task.ctx_y), torch.as_tensor(task.ctx_curve), 2
    )
    level = fit.level.clamp(0.0, 1.0).numpy()  # (S, E)
    assert fit.level.shape == (2, 6)
    assert fit.level[1].max() < -0.04 and forecast.loc[1] == 0.0
    np.testing.assert_allclose(forecast.loc, level.mean(axis=1), rtol=1e-12)
    expected_var = level.var(axis=1) + fit.residual_var.numpy()
    floor = LastValue().predict(task).scale  # never narrower than the last-value noise model
    np.testing.assert_allclose(forecast.scale, np.maximum(np.sqrt(expected_var), floor), rtol=1e-12)


def test_power_law_short_curves_fall_back_to_last_value():
    t = np.linspace(0.1, 0.5, 5)
    curves = [([0.2], [0.4]), ([0.1, 0.3], [0.3, 0.5]), (t, 0.8 - 0.1 * t**-0.5)]
    task = make_task(curves, target_curve=np.array([0, 1, 2, 1]))
    forecast = PowerLawEnsemble(PowerLawConfig(seed=3)).predict(task)
    fallback = LastValue(LastValueConfig(seed=3)).predict(task)
    short = np.array([True, True, False, True])
    np.testing.assert_array_equal(forecast.loc[short], fallback.loc[short])
    np.testing.assert_array_equal(forecast.scale[short], fallback.scale[short])
    assert abs(forecast.loc[2] - fallback.loc[2]) > 0.02  # curve 2 is fitted (0.7 vs 0.659)


def test_power_law_profile_by_hand():
    # For fixed α the profile is weighted least squares on [1, φ(t)]; its derivative by α must
    # match a finite difference of the SSE.
    rng = np.random.default_rng(0)
    t = torch.tensor(rng.uniform(0.05, 0.9, 7), dtype=torch.float64)
    y = torch.tensor(rng.uniform(0.2, 0.8, 7), dtype=torch.float64)
    weight = torch.tensor(rng.exponential(size=(7, 2)), dtype=torch.float64)
    slot = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    points = _WeightedPoints.of(t, y, weight, slot, 2)
    alpha = torch.tensor([[0.3, 1.5], [0.05, 0.8]], dtype=torch.float64)
    profile = points.profile(alpha)
    for s in range(2):
        for e in range(2):
            sel = (slot == s).numpy()
            a = alpha[s, e].item()
            phi = (t.numpy()[sel] ** -a - 1.0) / a
            sw = np.sqrt(weight.numpy()[sel, e])
            design = np.stack([np.ones_like(phi), phi], axis=1) * sw[:, None]
            coef, *_ = np.linalg.lstsq(design, y.numpy()[sel] * sw, rcond=None)
            sse = float(np.sum((design @ coef - y.numpy()[sel] * sw) ** 2))
            assert profile.level[s, e].item() == pytest.approx(coef[0], rel=1e-9)
            assert profile.slope[s, e].item() == pytest.approx(coef[1], rel=1e-9)
            assert profile.sse[s, e].item() == pytest.approx(sse, rel=1e-7, abs=1e-12)
    h = 1e-6
    numeric = (points.profile(alpha + h).sse - points.profile(alpha - h).sse) / (2 * h)
    np.testing.assert_allclose(profile.d_sse.numpy(), numeric.numpy(), rtol=1e-5, atol=1e-9)


# ---- Gaussian process --------------------------------------------------------------------------


def test_gp_beats_constant_on_smooth_task():
    # Measured: GP mse ≈ 0.1 × the best constant's; last-value is worse than the constant here.
    task = smooth_task()
    forecast = GaussianProcess().predict(task.hidden())
    mse = np.mean((forecast.mean() - task.target_y) ** 2)
    best_constant_mse = np.var(task.target_y)
    assert mse < 0.25 * best_constant_mse
    assert mse < np.mean((LastValue().predict(task).loc - task.target_y) ** 2)


def test_gp_std_smaller_near_data():
    # Curves 0-3 near λ = 0.2 observed up to t = 0.9; curve 4 at λ = 0.95 has no points.
    t = np.linspace(0.1, 0.9, 9)
    configs = np.array([[0.1], [0.2], [0.3], [0.25], [0.95]])
    curves = [(t, 0.6 + 0.1 * c[0] - 0.2 * (1 - t) ** 2) for c in configs[:4]] + [([], [])]
    task = make_task(curves, configs=configs, target_curve=np.array([1, 4]))
    forecast = GaussianProcess().predict(task)
    assert forecast.scale[0] < 0.5 * forecast.scale[1]


def test_gp_without_hyperparameters():
    # D = 0: k_hp ≡ 1, so every curve is the same function of t and all targets at t = 1 agree.
    task = make_task([(np.linspace(0.1, 0.5, 5), np.linspace(0.3, 0.5, 5)), ([0.2], [0.45])])
    forecast = GaussianProcess().predict(task)
    assert forecast.loc.shape == (2,)
    assert forecast.loc[0] == pytest.approx(forecast.loc[1], abs=1e-12)
    assert np.isfinite(forecast.log_prob([0.5, 0.5])).all()


def naive_kernel(hp: GPHyperparameters, x1, t1, x2, t2) -> np.ndarray:
    """s²·Matérn-5/2(λ, λ')·β^α/(t + t' + β)^α, pair by pair."""
    k = np.empty((len(t1), len(t2)))
    for i in range(len(t1)):
        for j in range(len(t2)):
            dist = math.sqrt(
                sum(((x1[i][d] - x2[j][d]) / ls) ** 2 for d, ls in enumerate(hp.lengthscales))
            )
            r = math.sqrt(5.0) * dist
            matern = (1 + r + r * r / 3) * math.exp(-r)
            k[i, j] = (
                hp.outputscale * matern * hp.beta**hp.alpha / (t1[i] + t2[j] + hp.beta) ** hp.alpha
            )
    return k


HP = GPHyperparameters(
    mean=0.4, outputscale=0.05, lengthscales=(0.3, 0.8), alpha=0.7, beta=0.4, noise_var=1e-3
)


def test_gp_posterior_matches_textbook_formula():
    task = smooth_task(n_curves=6, n_dims=2)
    x = task.configs[task.ctx_curve]
    k = naive_kernel(HP, x, task.ctx_t, x, task.ctx_t) + HP.noise_var * np.eye(task.n_context)
    qx = task.configs[task.target_curve]
    k_cross = naive_kernel(HP, x, task.ctx_t, qx, task.target_t)
    k_target = naive_kernel(HP, qx, task.target_t, qx, task.target_t)
    mean = HP.mean + k_cross.T @ np.linalg.solve(k, task.ctx_y - HP.mean)
    var = np.diag(k_target - k_cross.T @ np.linalg.solve(k, k_cross)) + HP.noise_var
    forecast = GaussianProcess().posterior(task, HP)
    np.testing.assert_allclose(forecast.loc, mean, rtol=1e-8)
    np.testing.assert_allclose(forecast.scale, np.sqrt(var), rtol=1e-6)
    with pytest.raises(ValueError, match="lengthscales"):
        GaussianProcess().posterior(smooth_task(n_curves=6, n_dims=1), HP)


@pytest.mark.parametrize("n_dims", [2, 0])
def test_gp_marginal_likelihood_and_gradient(n_dims):
    task = smooth_task(n_curves=6, n_dims=max(n_dims, 1))
    hp = HP
    if n_dims == 0:
        task = make_task([task.curve_points(c) for c in range(task.n_curves)])
        hp = GPHyperparameters(**{**asdict(HP), "lengthscales": ()})
    data = _GPData.of(task, np.arange(task.n_context))
    theta = _pack_theta(hp, 1e-6)
    nll, grad = _gp_nll_and_grad(theta, data, 1e-6)
    x = task.configs[task.ctx_curve]
    k = naive_kernel(hp, x, task.ctx_t, x, task.ctx_t) + hp.noise_var * np.eye(task.n_context)
    log_lik = stats.multivariate_normal(np.full(task.n_context, hp.mean), k).logpdf(task.ctx_y)
    assert nll == pytest.approx(-log_lik / task.n_context, rel=1e-9)
    numeric = approx_fprime(theta, lambda th: _gp_nll_and_grad(th, data, 1e-6)[0], 1e-7)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)


def test_gp_fit_subset_is_seeded():
    task = smooth_task(n_curves=30)
    assert task.n_context > 50
    fits = [GaussianProcess(GPConfig(max_fit_points=50, seed=s)).fit(task) for s in (0, 0, 1)]
    assert fits[0] == fits[1]
    assert fits[0] != fits[2]


# ---- every baseline --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_task() -> EvalTask:
    """Smooth curves with 2 hyperparameters, one curve with a single point, one without."""
    task = smooth_task(seed=3, n_curves=10, n_dims=2)
    curves = [task.curve_points(c) for c in range(task.n_curves)]
    curves[0] = (curves[0][0][:1], curves[0][1][:1])
    return make_task(
        curves,
        configs=task.configs,
        target_curve=np.arange(10),
        target_y=task.target_y,
    )


@pytest.mark.parametrize("name", list(BASELINES))
def test_forecast_contract(name, mixed_task):
    forecast = make_baseline(name).predict(mixed_task)
    assert isinstance(forecast, GaussianForecast)
    assert forecast.loc.shape == forecast.scale.shape == (mixed_task.n_targets,)
    assert np.isfinite(forecast.log_prob(mixed_task.target_y)).all()
    assert np.all((forecast.mean() >= 0.0) & (forecast.mean() <= 1.0))


@pytest.mark.parametrize("name", list(BASELINES))
def test_deterministic_and_blind_to_targets(name, mixed_task):
    first = make_baseline(name).predict(mixed_task)
    second = make_baseline(name).predict(mixed_task.hidden())
    np.testing.assert_array_equal(first.loc, second.loc)
    np.testing.assert_array_equal(first.scale, second.scale)


def test_power_law_seed_matters(mixed_task):
    a = PowerLawEnsemble(PowerLawConfig(seed=0)).predict(mixed_task)
    b = PowerLawEnsemble(PowerLawConfig(seed=1)).predict(mixed_task)
    assert not np.array_equal(a.loc, b.loc)
